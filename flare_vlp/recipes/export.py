"""``flare-vlp jobs export``: one FLARE job folder per registered method, from the registry.

A multi-role method is exported when it names ``default_roles`` (its sites get them in order, cycled); a method's
``job_overrides`` (e.g. CreamFL's public split) are merged over the config, and its SynthCXR folder is its own
(``<data_dir>-<method>``: a data folder belongs to one SynthCXR config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flare_vlp.config import merge_overrides
from flare_vlp.methods.registry import DEFAULT_ROLE, get_method, method_names, resolve
from flare_vlp.methods.run_spec import DataSource, RunSpec

__all__ = ["export_jobs", "exportable_methods"]


def exportable_methods() -> list[str]:
    """Methods whose sites get roles without a job saying so: single-role methods and those with default roles."""
    return [m for m in method_names() if set(get_method(m).roles) == {DEFAULT_ROLE} or get_method(m).default_roles]


def export_jobs(
    out_dir: str | Path,
    *,
    config: str = "tiny",
    data_dir: str | Path,
    num_rounds: int = 2,
    n_clients: int = 2,
    methods: list[str] | None = None,
    method_configs: dict[str, dict] | None = None,
    **spec_fields: Any,
) -> dict[str, Path]:
    """Write one job folder per method (``out_dir/<job name>``); returns method -> folder.

    ``data_dir`` is written into the job's run spec as an absolute path (sites on this machine read it; other
    machines need the same path or a per-site manifest; ``~/...`` stays as is). ``method_configs``: method -> its
    settings. ``spec_fields``: further :class:`~flare_vlp.methods.run_spec.RunSpec` fields for every job
    (``local_steps``, ``num_threads``, ``config_overrides``, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for method in methods or exportable_methods():
        spec = get_method(method)
        fields = dict(spec_fields)
        if spec.job_overrides:
            fields["config_overrides"] = merge_overrides(fields.get("config_overrides"), dict(spec.job_overrides))
        sites = None if set(spec.roles) == {DEFAULT_ROLE} else tuple(f"site-{i + 1}" for i in range(n_clients))
        run = RunSpec(
            method,
            method_settings=(method_configs or {}).get(method) or {},
            config=config,
            num_rounds=num_rounds,
            min_clients=n_clients,
            sites=sites,  # a multi-role method: its default roles placed on the sites in order
            data=DataSource(data_dir=f"{data_dir}-{method}" if spec.job_overrides else str(data_dir)),
            **fields,
        )
        resolve(spec.recipe)(run).export(str(out_dir))
        paths[method] = out_dir / spec.job_name
    return paths
