"""``flare-vlp jobs export``: one FLARE job folder per registered method, from the registry.

A multi-role method is exported when it names ``default_roles`` (its sites get them in order, cycled); a method's
``job_overrides`` (e.g. CreamFL's public split) are merged over the config, and its SynthCXR folder is its own
(``<data_dir>-<method>``: a data folder belongs to one SynthCXR config).
"""

from __future__ import annotations

from pathlib import Path

from flare_vlp.config import merge_overrides
from flare_vlp.methods.registry import DEFAULT_ROLE, assign_roles, get_method, method_names, resolve

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
    **kwargs,
) -> dict[str, Path]:
    """Write one job folder per method (``out_dir/<job name>``); returns method -> folder.

    ``data_dir`` is written into the client config as an absolute path (sites on this machine read it; other
    machines need the same path or a per-site manifest). ``method_configs``: method -> its settings. Extra
    ``kwargs`` go to every recipe.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for method in methods or exportable_methods():
        spec = get_method(method)
        sites = [f"site-{i + 1}" for i in range(n_clients)]
        roles = assign_roles(method, sites)
        extra = dict(kwargs)
        if spec.job_overrides:
            extra["config_overrides"] = merge_overrides(extra.get("config_overrides"), dict(spec.job_overrides))
        recipe = resolve(spec.recipe)(
            method=method,
            method_config=(method_configs or {}).get(method),
            config=config,
            data_dir=f"{data_dir}-{method}" if spec.job_overrides else data_dir,
            num_rounds=num_rounds,
            min_clients=n_clients,
            **({"roles": roles, "sites": sites} if roles else {}),
            **extra,
        )
        recipe.export(str(out_dir))
        paths[method] = out_dir / spec.job_name
    return paths
