"""One registry of federated methods: name -> (typed config, server strategy, client algorithm per role, recipe).

Modelled on peft's ``register_peft_method``: each method's package registers itself at import (its
``__init__``), and everything that lists methods — the ``flare-vlp run`` flags, the recipes, ``jobs export``, the
YAML ``fl:`` section — reads this table instead of keeping its own. The strategy, client algorithm and recipe are
class paths resolved on first use, so listing methods (``flare-vlp --help``) never imports torch or nvflare.

A method's config is a frozen dataclass whose fields carry ``metadata={"help": ...}`` (peft's ``LoraConfig``
style); :func:`setting` writes such a field, and :func:`method_config` builds one strictly from plain values,
naming the offending key (``fl.rho``) on error.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flare_vlp.config import ConfigError, config_from_dict

__all__ = [
    "DEFAULT_ROLE",
    "MethodSpec",
    "register_method",
    "get_method",
    "method_names",
    "method_config",
    "config_values",
    "setting",
    "check",
    "resolve",
    "fl_settings",
    "FL_RUN_KEYS",
    "assign_roles",
    "report_columns",
    "demo_methods",
]

DEFAULT_ROLE = "default"
"""The role of every site in a single-role method."""


def setting(default: Any, help: str) -> Any:
    """A method-config field with its default and help text (mutable defaults copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def check(cond: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("`<key>` <message>")`` unless ``cond`` (:func:`method_config` adds the section path)."""
    if not cond:
        raise ConfigError(f"`{key}` {message}")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Args:
        name: the method name users type (``flare-vlp run --method NAME``).
        config_cls: its frozen config dataclass.
        strategy: class path of its :class:`~flare_vlp.methods.strategy.ServerStrategy` (built with the config).
        roles: role -> class path of the role's :class:`~flare_vlp.methods.client.ClientAlgo`.
        summary: one line for listings and job folders.
        job_name: the exported job folder's name.
        recipe: class path of the FLARE recipe that builds its job (the generic one unless the method needs more).
        plots: class paths of the functions that draw the method's own plots of a finished run, each called as
            ``fn(run_dir, method) -> list[Path]`` after the evaluation: they read the run's ``metrics.jsonl`` and
            write into its ``plots/`` folder (e.g. FedDRA's site weights per round).
        report_columns: summary keys its runs report after (or, with no global model, instead of) the headline of
            ``flare-vlp report`` (:func:`flare_vlp.experiments.report.compare_runs`), e.g. a personalized method's
            per-site scores.
        demo: its settings when ``flare-vlp demo`` runs it (``None``: the demo leaves it out); the demo runs its
            methods in registration order.
        default_roles: how sites get roles when a job does not say: the roles given to the sites in order, cycled
            (``None``: every site has :data:`DEFAULT_ROLE`).
        job_overrides: config overrides every exported job of the method needs (e.g. a public split).
        evaluator: class path of the function that evaluates a finished run
            (:mod:`flare_vlp.experiments.federated_eval`; default: the global dual encoder on the pooled test split).
        needs_splits: splits of the shared data the method reads besides each site's own (CreamFL: ``public``);
            a run whose data has none is refused before it starts
            (:meth:`~flare_vlp.methods.run_spec.RunSpec.validate`).
    """

    name: str
    config_cls: type
    strategy: str
    roles: Mapping[str, str]
    summary: str
    job_name: str = ""
    recipe: str = "flare_vlp.recipes.method_recipe.MethodRecipe"
    plots: tuple[str, ...] = ()
    report_columns: tuple[str, ...] = ()
    demo: Mapping[str, Any] | None = None
    default_roles: tuple[str, ...] | None = None
    job_overrides: Mapping[str, Any] = field(default_factory=dict)
    evaluator: str = "flare_vlp.experiments.federated_eval.evaluate_global_model"
    needs_splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.job_name:
            object.__setattr__(self, "job_name", f"{self.name}_vlp")
        if not dataclasses.is_dataclass(self.config_cls):
            raise TypeError(f"method {self.name!r}: config_cls must be a dataclass, got {self.config_cls!r}")
        if not self.roles:
            raise ValueError(f"method {self.name!r}: needs at least one role")
        unknown = sorted(set(self.default_roles or ()) - set(self.roles))
        if unknown:
            raise ValueError(
                f"method {self.name!r}: default_roles {unknown} are not among its roles {sorted(self.roles)}"
            )
        for key in ("plots", "report_columns"):
            if isinstance(getattr(self, key), str):
                raise TypeError(
                    f"method {self.name!r}: {key} must be a tuple of strings, got the string {getattr(self, key)!r}"
                )

    def strategy_cls(self) -> type:
        return resolve(self.strategy)

    def client_cls(self, role: str = DEFAULT_ROLE) -> type:
        if role not in self.roles:
            raise ValueError(f"method {self.name!r} has no site role {role!r}; roles: {sorted(self.roles)}")
        return resolve(self.roles[role])


_REGISTRY: dict[str, MethodSpec] = {}


def assign_roles(method: str, sites: list[str], mix: str | Mapping[str, int] | None = None) -> dict[str, str] | None:
    """Site -> role for ``sites`` (in order): from a role mix such as ``"image:2,text:1,image_text:2"`` (or a mapping
    role -> count), else from the method's ``default_roles`` cycled over the sites. ``None`` for a single-role
    method without a mix.

    Raises:
        ValueError: a malformed mix, a role the method does not have, a count that is not a positive integer, a mix
            whose counts do not add up to the number of sites, or a mix for a method without site roles.
    """
    spec = get_method(method)
    if mix is None:
        if spec.default_roles is None:
            return None
        return {site: spec.default_roles[i % len(spec.default_roles)] for i, site in enumerate(sites)}
    if set(spec.roles) == {DEFAULT_ROLE}:
        raise ValueError(f"method {method!r} has no site roles; a role mix ({mix!r}) does not apply")
    counts: dict[str, int] = {}
    items = mix.items() if isinstance(mix, Mapping) else [part.partition(":")[::2] for part in mix.split(",")]
    for role, count in items:
        role = str(role).strip()
        if role not in spec.roles:
            close = difflib.get_close_matches(role, list(spec.roles), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"role mix {mix!r}: method {method!r} has no role {role!r}{hint}; roles {sorted(spec.roles)}"
            )
        try:
            n = int(count)
        except (TypeError, ValueError):
            n = 0
        if n < 1 or role in counts:
            raise ValueError(f"role mix {mix!r}: expected role:count pairs (count >= 1, each role once), got {role!r}")
        counts[role] = n
    if sum(counts.values()) != len(sites):
        raise ValueError(
            f"role mix {mix!r} gives {sum(counts.values())} sites, but there are {len(sites)} training sites {sites}"
        )
    roles = [role for role, n in counts.items() for _ in range(n)]
    return dict(zip(sites, roles))


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry; a second method with the same name is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    importlib.import_module("flare_vlp.methods")  # its __init__ imports every method package


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name suggests the closest one."""
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; methods: {method_names()}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def report_columns() -> dict[str, tuple[str, ...]]:
    """Method -> the columns its runs add to a report (:attr:`MethodSpec.report_columns`), for every method with
    some: what ``flare-vlp report`` hands :func:`~flare_vlp.experiments.report.compare_runs`."""
    _ensure_loaded()
    return {name: spec.report_columns for name, spec in _REGISTRY.items() if spec.report_columns}


def demo_methods() -> dict[str, dict[str, Any]]:
    """Method -> its settings in ``flare-vlp demo`` (:attr:`MethodSpec.demo`), in registration order."""
    _ensure_loaded()
    return {name: dict(spec.demo) for name, spec in _REGISTRY.items() if spec.demo is not None}


def method_config(name: str, values: Mapping[str, Any] | None = None, prefix: str = "fl.") -> Any:
    """Method ``name``'s config from plain ``values`` (unknown keys and wrong types named as ``fl.<key>``)."""
    spec = get_method(name)
    try:
        return config_from_dict(spec.config_cls, dict(values or {}), prefix=prefix)
    except ConfigError as e:  # a __post_init__ check names the bare field: give it its section path
        text = str(e)
        for f in dataclasses.fields(spec.config_cls):
            if text.startswith(f"`{f.name}`"):
                raise ConfigError(f"`{prefix}{f.name}`{text[len(f.name) + 2 :]}") from None
        raise


def config_values(cfg: Any) -> dict[str, Any]:
    """A method config as plain values (for job configs and run folders); round-trips through :func:`method_config`."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def resolve(path: str) -> Any:
    """The object at dotted ``path`` (``package.module.Name``)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot import {path!r}: {e}") from e


FL_RUN_KEYS: dict[str, tuple[type, Any]] = {"rounds": (int, 5), "local_steps": (int, None), "device": (str, "cpu")}
"""The run-level keys of the YAML ``fl:`` section (besides one sub-section of settings per method name)."""


def fl_settings(fl: Mapping[str, Any] | None, method: str) -> dict[str, Any]:
    """Read the experiment YAML's ``fl:`` section for ``method``.

    The section holds run-level keys (:data:`FL_RUN_KEYS`) and, per method name, that method's settings::

        fl:
          rounds: 6
          feddra: {rho: 0.1, stage1_steps: 2}
          fedprox: {mu: 0.05}

    Every method sub-section is validated (a typo in any of them is an error naming ``fl.<method>.<key>``).

    Returns:
        ``{"rounds", "local_steps", "device", "method_config"}`` with ``method_config`` the plain settings of
        ``method`` given in the YAML (absent fields keep the config class's defaults).
    """
    fl = dict(fl or {})
    names = method_names()
    out: dict[str, Any] = {}
    for key, value in fl.items():
        if key in FL_RUN_KEYS:
            tp, _ = FL_RUN_KEYS[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, tp)):
                raise ConfigError(f"`fl.{key}` expects {tp.__name__}, got {value!r}")
        elif key in names:
            if not isinstance(value, Mapping):
                raise ConfigError(f"`fl.{key}` must be a mapping of {key}'s settings, got {type(value).__name__}")
            method_config(key, value, prefix=f"fl.{key}.")
        else:
            close = difflib.get_close_matches(str(key), [*FL_RUN_KEYS, *names], n=1)
            hint = f" (did you mean `fl.{close[0]}`?)" if close else ""
            raise ConfigError(f"`fl.{key}` is not a known key{hint}; run keys {list(FL_RUN_KEYS)}, methods {names}")
    for key, (_, default) in FL_RUN_KEYS.items():
        out[key] = fl.get(key, default)
    out["method_config"] = dict(fl.get(method) or {})
    return out
