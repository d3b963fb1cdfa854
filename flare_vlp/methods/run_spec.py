"""One run of a federated method as one typed object: :class:`RunSpec`, with its :class:`DataSource`.

Every host of a run takes it whole, instead of a dozen keyword arguments passed along by hand: the FLARE recipe
(``MethodRecipe(spec)``), the in-process runner (``run_in_process(spec, run_dir)``), ``run_federated(spec, out,
env=...)``, and the FLARE controller and executor, as the plain dict of :meth:`RunSpec.to_dict` (a job's component
arguments are JSON). It is checked before anything starts, in two steps: when it is built (``__post_init__``: the
method and its settings, counts, roles against sites, devices; no file is read), and by :meth:`RunSpec.validate`,
the pre-launch check (the config files, the data source, the splits the method reads, the role mix against the
data's sites, each role's options), so a run that cannot work is refused in a second, naming the method, the preset
or file and what is missing, instead of failing at the sites.

Example:
    >>> spec = RunSpec("fedprox", method_settings={"mu": 0.01}, config="tiny", num_rounds=3,
    ...                data=DataSource(data_dir="data/synthcxr"), local_steps=2)  # doctest: +SKIP
    >>> RunSpec.from_dict(spec.to_dict()) == spec  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_vlp.config import ExperimentConfig, load_config, merge_overrides
from flare_vlp.methods.data_source import DataFacts, DataSource, data_facts, job_path
from flare_vlp.methods.registry import DEFAULT_ROLE, assign_roles, config_values, get_method, method_config, setting

__all__ = ["DataSource", "RunSpec"]

ROLE_SETTING_KEYS = ("config_overrides", "options")
_DEVICE = re.compile(r"^(cpu|auto|cuda|cuda:\d+)$")
_SPLIT_HINTS = {"public": "data.synth.public_samples > 0"}
"""The SynthCXR setting that makes a split (for the error that says what is missing)."""


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # a frozen dataclass normalising its own fields in __post_init__


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one federated run of a registered method (frozen; plain values only).

    Args:
        method: registered method name (``flare-vlp run --method``).
        method_settings: the method's settings (fields of its registered config); stored complete, every field.
        config: preset name or YAML path of the experiment config (a path is made absolute).
        config_overrides: nested dict merged over the config on the server and every site.
        num_rounds: federated rounds.
        min_clients: fewest sites a job starts with and fewest valid replies a task accepts; default every site.
        sites: the FLARE client names (default: the environment's clients; ``run_federated``: ``site-1..site-N``).
        roles: site -> role for a multi-role method (default: ``role_mix``, else the method's default roles).
        role_mix: roles as ``role:count`` pairs mapped onto the sites in order (``"image:2,text:1"``).
        role_settings: role -> ``{"config_overrides": {...}, "options": {...}}`` (its config and its options).
        data: the data source (:class:`DataSource`).
        local_steps: optimizer steps per training task (default: one epoch of the site's train split).
        device: torch device of every site (``cpu``, ``cuda``, ``cuda:N``, ``auto``), or site -> device.
        num_threads: torch CPU threads per site (default: torch's choice).
        task_timeout: seconds a task may take from when the server sends it (0: no limit; round 0 includes the
            sites' start-up).
        wait_after_min_s: once ``min_clients`` sites answered a task, how long the others may still take.
        store_dir: the sites' store folder (``{site}`` replaced); default: the site's FLARE workspace (in process:
            ``RUN_DIR/stores/{site}``).

    Raises:
        ValueError / ConfigError: an unknown method or role, a bad setting or count, roles or devices naming sites
            that are not in ``sites``; each names the field.
    """

    method: str = field(metadata={"help": "registered method name"})
    method_settings: Mapping[str, Any] = setting({}, "the method's settings (fields of its registered config)")
    config: str = setting("tiny", "preset name or YAML path of the experiment config")
    config_overrides: Mapping[str, Any] | None = setting(None, "nested dict merged over the config everywhere")
    num_rounds: int = setting(2, "federated rounds")
    min_clients: int | None = setting(None, "fewest sites and valid replies per task (default: every site)")
    sites: tuple[str, ...] | None = setting(None, "FLARE client names (default: the environment's clients)")
    roles: Mapping[str, str] | None = setting(None, "site -> role of a multi-role method")
    role_mix: str | None = setting(None, "roles as role:count pairs mapped onto the sites in order")
    role_settings: Mapping[str, Mapping] = setting({}, "role -> {config_overrides: {...}, options: {...}}")
    data: DataSource = field(default_factory=DataSource, metadata={"help": "the data source (DataSource)"})
    local_steps: int | None = setting(None, "optimizer steps per training task (default: one local epoch)")
    device: str | Mapping[str, str] = setting("cpu", "torch device of the sites (cpu, cuda, cuda:N, auto) or per site")
    num_threads: int | None = setting(None, "torch CPU threads per site (default: torch's choice)")
    task_timeout: int = setting(0, "seconds a task may take from when the server sends it (0: no limit)")
    wait_after_min_s: int = setting(3600, "once min_clients answered, seconds the other sites may still take")
    store_dir: str | None = setting(None, "the sites' store folder ({site} replaced); default: the site workspace")

    def __post_init__(self) -> None:
        spec = get_method(self.method)
        settings = method_config(self.method, self.method_settings, prefix=f"fl.{self.method}.")  # the YAML key
        _set(self, "method_settings", config_values(settings))
        if Path(self.config).suffix:
            _set(self, "config", job_path(self.config))
        _set(self, "config_overrides", json.loads(json.dumps(dict(self.config_overrides or {}))) or None)
        if not isinstance(self.data, DataSource):
            _set(self, "data", _from_plain(DataSource, self.data, "data."))
        for name, low in (("num_rounds", 1), ("min_clients", 1), ("local_steps", 1), ("num_threads", 1),
                          ("task_timeout", 0), ("wait_after_min_s", 0)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{self.method}: `{name}` must be an integer >= {low}, got {value!r}")
        self._place_sites(spec)
        self._check_role_settings(spec)
        self._check_devices()

    # -- checks at construction -----------------------------------------------------------------------------------

    def _place_sites(self, spec) -> None:
        """Sites (given, else the sites named by ``roles`` / a per-site ``device``), their roles and min_clients."""
        roles = dict(self.roles) if self.roles else None
        sites = list(self.sites) if self.sites else (sorted(roles) if roles else None)
        if sites is None and isinstance(self.device, Mapping):
            sites = sorted(self.device)
        if sites is not None and len(set(sites)) != len(sites):
            raise ValueError(f"{self.method}: `sites` {sites} names a site twice")
        if roles is not None and self.role_mix is not None:
            raise ValueError(f"{self.method}: give `roles` or `role_mix`, not both")
        role_mix = self.role_mix
        if roles is None and sites is not None:
            roles = assign_roles(self.method, sites, role_mix)  # a bad mix is refused here, naming it
            role_mix = None  # placed: the roles say it now
        for role in (roles or {}).values():
            spec.client_cls(role)  # unknown role: the error names the method's roles
        unknown = sorted(set(roles or {}) - set(sites or []))
        if unknown:
            raise ValueError(f"{self.method}: `roles` names sites {unknown} that are not in `sites` {sites}")
        min_clients = self.min_clients if self.min_clients is not None else (len(sites) if sites else None)
        if sites is not None and min_clients > len(sites):
            raise ValueError(f"{self.method}: min_clients={min_clients} but only {len(sites)} sites {sites}")
        _set(self, "sites", tuple(sites) if sites is not None else None)
        _set(self, "roles", roles)
        _set(self, "role_mix", role_mix)
        _set(self, "min_clients", min_clients)

    def _check_role_settings(self, spec) -> None:
        plain = {}
        for role, extra in dict(self.role_settings or {}).items():
            spec.client_cls(role)
            if not isinstance(extra, Mapping):
                raise ValueError(f"{self.method}: role_settings[{role!r}] must be a mapping, got {extra!r}")
            unknown = sorted(set(extra) - set(ROLE_SETTING_KEYS))
            if unknown:
                raise ValueError(f"role_settings[{role!r}]: unknown keys {unknown} (config_overrides, options)")
            plain[role] = json.loads(json.dumps({k: dict(v or {}) for k, v in extra.items()}))
        _set(self, "role_settings", plain)

    def _check_devices(self) -> None:
        named = dict(self.device) if isinstance(self.device, Mapping) else {"every site": self.device}
        for site, device in named.items():
            if not isinstance(device, str) or not _DEVICE.match(device):
                raise ValueError(f"{self.method}: device {device!r} of {site}: use cpu, cuda, cuda:N or auto")
        if isinstance(self.device, Mapping):
            unknown = sorted(set(named) - set(self.sites or []))
            if unknown:
                raise ValueError(f"{self.method}: `device` names sites {unknown} that are not in `sites` {self.sites}")
            _set(self, "device", named)

    # -- what a host asks ---------------------------------------------------------------------------------------

    def role_of(self, site: str) -> str:
        """The role ``site`` plays (:data:`DEFAULT_ROLE` unless ``roles`` says otherwise)."""
        return (self.roles or {}).get(site, DEFAULT_ROLE)

    def device_of(self, site: str) -> str:
        """The device string of ``site`` (unresolved: ``auto`` stays ``auto``)."""
        return self.device.get(site, "cpu") if isinstance(self.device, Mapping) else self.device

    def role_overrides(self, role: str | None = None) -> dict | None:
        """The config overrides of ``role``'s sites: the run's, with the role's merged over them."""
        extra = self.role_settings.get(role, {}).get("config_overrides") if role else None
        return merge_overrides(self.config_overrides, extra) or None

    def role_options(self, role: str) -> dict:
        """Keyword options of ``role``'s client algorithm."""
        return dict(self.role_settings.get(role, {}).get("options") or {})

    def load_config(self, role: str | None = None) -> ExperimentConfig:
        """The experiment config of the server (``role`` ``None``) or of ``role``'s sites."""
        return load_config(self.config, self.role_overrides(role))

    def store_path(self, site: str, default: str) -> str:
        """``site``'s store folder: ``store_dir`` with ``{site}`` replaced, else ``default`` (likewise)."""
        return (self.store_dir or default).replace("{site}", site)

    # -- the plain dict of a job config -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for tuples); :meth:`from_dict` gives the same spec back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        """The spec of :meth:`to_dict`'s ``values``; an unknown key is an error naming it."""
        return _from_plain(cls, values, "")

    def with_default_data(self, root: str | Path) -> RunSpec:
        """This spec, with SynthCXR in ``root/data/synthcxr-<hash of its config>`` when it names no data folder or
        manifest (one folder per SynthCXR config, shared by every run that uses it)."""
        from flare_vlp.experiments.builders import default_data_dir

        if self.data.data_dir is not None or self.data.manifest is not None:
            return self
        data_dir = str(default_data_dir(self.load_config(), Path(root).absolute()))
        return self.replace(data=dataclasses.replace(self.data, data_dir=data_dir))

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    # -- the pre-launch check -----------------------------------------------------------------------------------

    def validate(self) -> ExperimentConfig:
        """Everything that can be known before a run starts, in about a second: the config (and every role's)
        loads and is valid, the data source exists and holds the splits the method reads, the role mix fits the
        data's training sites, and each role's client algorithm takes its options. Returns the run's config.

        Raises:
            ValueError / ConfigError: the first problem, naming the method, the preset or file and what is missing.
        """
        from flare_vlp.experiments.builders import validate_config

        spec = get_method(self.method)
        cfg = validate_config(self.load_config())
        roles = self._roles_in_use(spec)
        for role in roles:
            validate_config(self.load_config(role))
        if not self.data.given(cfg):
            raise ValueError(f"{self.method}: no data source; give `data_dir` or `manifest` (or data.manifest in "
                             f"config {self.config!r})")  # fmt: skip
        facts = data_facts(cfg, self.data, self.config)
        for split in spec.needs_splits:
            if split not in facts.splits:
                hint = f": set {_SPLIT_HINTS[split]}" if facts.synthetic and split in _SPLIT_HINTS else ""
                raise ValueError(f"method {self.method!r} reads the {split!r} split of the shared data, but "
                                 f"{facts.where} has no {split!r} split{hint}")  # fmt: skip
        self._check_data_sites(spec, facts)
        for role in roles:
            try:
                spec.client_cls(role)(**self.role_options(role))
            except (TypeError, ValueError) as e:
                raise ValueError(f"method {self.method!r}, role {role!r}: bad options "
                                 f"{self.role_options(role)}: {e}") from None  # fmt: skip
        return cfg

    def _roles_in_use(self, spec) -> list[str]:
        if self.roles:
            return sorted(set(self.roles.values()))
        return sorted(set(spec.default_roles or ())) or [DEFAULT_ROLE]

    def _check_data_sites(self, spec, facts: DataFacts) -> None:
        """``data_sites`` and ``site_map`` name training sites of the data; without ``sites``, the role mix (or the
        method's roles) fits the data's training sites."""
        sites = facts.sites
        if self.data.data_sites is not None:
            unknown = sorted(set(self.data.data_sites) - set(sites))
            if unknown:
                raise ValueError(f"{self.method}: data_sites {list(self.data.data_sites)}: {unknown} not among the "
                                 f"training sites {sites} of {facts.where}")  # fmt: skip
        sites = self.data.taking_part(sites)
        mapped = sorted(set((self.data.site_map or {}).values()) - set(facts.sites))
        if mapped:
            raise ValueError(f"{self.method}: site_map names data sites {mapped} that have no training rows in "
                             f"{facts.where} (training sites {facts.sites})")  # fmt: skip
        if self.sites is None:
            clients = [f"site-{i + 1}" for i in range(len(sites))]
            try:
                roles = assign_roles(self.method, clients, self.role_mix)
            except ValueError as e:
                raise ValueError(f"{e} (the training sites of {facts.where})") from None
            if roles is None and set(spec.roles) != {DEFAULT_ROLE}:
                raise ValueError(f"method {self.method!r} has site roles {sorted(spec.roles)}: give `roles` or a "
                                 f"role mix (--roles role:count,...)")  # fmt: skip


def _from_plain(cls: type, values: Mapping[str, Any] | Any, prefix: str) -> Any:
    """``cls(**values)`` with an unknown key named (``prefix`` + key) instead of a TypeError."""
    if not isinstance(values, Mapping):
        raise ValueError(f"`{prefix.rstrip('.') or cls.__name__}` must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {[prefix + k for k in unknown]}; keys: {names}")
    missing = [f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING]
    absent = [k for k in missing if k not in values]
    if absent:
        raise ValueError(f"{cls.__name__}: missing {[prefix + k for k in absent]}")
    return cls(**dict(values))
