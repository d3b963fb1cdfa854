"""``flare-vlp jobs export``: one FLARE job folder per registered single-role method, from the registry."""

from __future__ import annotations

from pathlib import Path

from flare_vlp.methods.registry import DEFAULT_ROLE, get_method, method_names, resolve

__all__ = ["export_jobs", "exportable_methods"]


def exportable_methods() -> list[str]:
    """Methods whose job needs no per-site role assignment (every site plays the default role)."""
    return [m for m in method_names() if set(get_method(m).roles) == {DEFAULT_ROLE}]


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
        recipe = resolve(spec.recipe)(
            method=method,
            method_config=(method_configs or {}).get(method),
            config=config,
            data_dir=data_dir,
            num_rounds=num_rounds,
            min_clients=n_clients,
            **kwargs,
        )
        recipe.export(str(out_dir))
        paths[method] = out_dir / spec.job_name
    return paths
