"""``flare-vlp run``: a federated method in FLARE (simulator, POC or a provisioned system), evaluated like every
baseline.

Steps: prepare the data (SynthCXR generated once, before the sites start), build the method's Recipe with one
client per training site, run it in ``SimEnv`` / a POC system / ``ProdEnv`` (:mod:`flare_vlp.fl.deploy`), then load
the final global model and evaluate it with the same protocol as the centralized / local baselines, into the same
run-folder layout (``flare-vlp report`` compares them). The FLARE workspace (site logs, the persisted global model;
in prod the downloaded job result) is kept under ``RUN_DIR/flare``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from flare_vlp.config import load_config
from flare_vlp.evaluation import is_unseen
from flare_vlp.experiments.builders import default_data_dir, prepare_manifest
from flare_vlp.experiments.convergence import convergence, global_loss_by_round
from flare_vlp.experiments.plots import plot_losses
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.methods.registry import assign_roles, config_values, get_method, method_config, resolve
from flare_vlp.utils.io import atomic_output_dir

__all__ = ["ENVS", "run_federated"]


ENVS = ("sim", "poc", "prod", "inprocess")


def run_federated(
    config: str,
    out_dir: str | Path,
    method: str,
    *,
    num_rounds: int = 5,
    local_steps: int | None = None,
    data_dir: str | Path | None = None,
    method_args: dict | None = None,
    overwrite: bool = False,
    overrides: dict | None = None,
    echo: Callable[[str], None] = print,
    env: str = "sim",
    poc_workspace: str | Path | None = None,
    startup_kit: str | Path | None = None,
    username: str = "admin@nvidia.com",
    clients: list[str] | None = None,
    timeout: float = 0,
    device: str = "cpu",
    roles: dict[str, str] | None = None,
    role_settings: dict[str, dict] | None = None,
    role_mix: str | dict[str, int] | None = None,
    data_sites: list[str] | None = None,
) -> dict:
    """Run ``method`` in FLARE and write its run folder; returns the headline summary.

    ``overrides`` (a nested dict, e.g. ``{"seed": 1}``) is merged over the config on the server and every site.
    ``method_args``: the method's settings (fields of its registered config: FedProx ``mu``; FedDRA / FedAID ``rho``,
    ``eta``, ``signal``, ...), validated before anything runs. ``device``: ``cpu``, ``cuda`` or ``auto`` for every
    site. ``roles`` / ``role_settings``: per-site roles of a multi-role method (see
    :class:`~flare_vlp.recipes.MethodRecipe`); without ``roles``, ``role_mix`` (``"image:2,text:1,image_text:2"``)
    or else the method's default roles map onto the clients in order (:func:`~flare_vlp.methods.registry.assign_roles`).
    ``env``: ``sim`` (simulator), ``inprocess`` (the platform's in-process runner: the same strategy and client
    algorithms in this process, no FLARE; for benchmark seed grids), ``poc`` (a POC system on this machine, in
    ``poc_workspace``, default ``RUN_DIR/flare/poc``; always stopped afterwards) or ``prod`` (a provisioned system:
    ``startup_kit`` is the admin ``username``'s startup kit; every site ran ``flare-vlp jobs allow``). ``clients``:
    the FLARE client names, mapped in order onto the data's training sites (default ``site-1..site-N``).
    ``timeout``: seconds to wait for a POC or prod job (0: no limit). ``data_sites``: only these training sites take
    part (e.g. FedAvg over the image-text sites of a CreamFL comparison); default all.
    """
    spec = get_method(method)  # unknown method: error with the registered names
    settings = method_config(method, method_args)
    method_args = config_values(settings)
    if env not in ENVS:
        raise ValueError(f"unknown env '{env}'; choose one of {list(ENVS)}")
    if env == "prod" and startup_kit is None:
        raise ValueError("env 'prod' needs the admin's startup kit (startup_kit / --startup-kit)")
    cfg = load_config(config, overrides)
    out_dir = Path(out_dir).absolute()
    data_dir = Path(data_dir).absolute() if data_dir is not None else default_data_dir(cfg, out_dir.parent)
    t0 = time.perf_counter()
    manifest = prepare_manifest(cfg, data_dir)
    trained = {r.site for r in manifest if r.split in ("train", "test")}  # not the public split's own "site"
    sites = [s for s in manifest.sites if not is_unseen(s) and s in trained]
    if data_sites is not None:
        unknown = sorted(set(data_sites) - set(sites))
        if unknown or not data_sites:
            raise ValueError(f"data_sites {list(data_sites)}: {unknown or 'none'} not among the training sites {sites}")
        sites = [s for s in sites if s in set(data_sites)]
    echo(f"[{method}] data: {len(manifest)} rows; {len(sites)} sites {sites}; {num_rounds} rounds in env '{env}'")
    clients = list(clients) if clients else [f"site-{i + 1}" for i in range(len(sites))]
    if len(clients) != len(sites):
        raise ValueError(f"{len(clients)} FLARE clients {clients} for {len(sites)} training sites {sites}")
    site_map = dict(zip(clients, sites))
    if roles is None:
        roles = assign_roles(method, clients, role_mix)  # a bad mix fails before any training
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        if env == "inprocess":
            from flare_vlp.methods.runner import run_in_process

            run_in_process(
                method, sites=clients, run_dir=tmp, config=config, method_settings=method_args,
                num_rounds=num_rounds, data_dir=data_dir, site_map=site_map, local_steps=local_steps,
                device=device, config_overrides=overrides, roles=roles, role_settings=role_settings,
            )  # fmt: skip
            fl_seconds = time.perf_counter() - t0
            echo(f"[{method}] in-process training done in {fl_seconds:.0f} s; evaluating")
            summary = _evaluate(cfg, manifest, tmp, method, settings, site_map, fl_seconds, echo)
            echo(f"[{method}] wrote {out_dir} ({time.perf_counter() - t0:.0f} s)")
            return summary
        recipe = resolve(spec.recipe)(
            method=method,
            method_config=method_args,
            config=config if not Path(config).suffix else str(Path(config).absolute()),
            num_rounds=num_rounds,
            min_clients=len(sites),
            data_dir=str(data_dir),
            local_steps=local_steps,
            run_dir=None if env == "prod" else str(tmp),  # prod: the server's app folder, downloaded below
            site_map=site_map,
            num_threads=1,
            config_overrides=overrides,
            device=device,
            roles=roles,
            role_settings=role_settings,
            sites=clients if roles else None,
        )
        _run_job(recipe, env, tmp, clients, poc_workspace, startup_kit, username, timeout, echo)
        fl_seconds = time.perf_counter() - t0
        echo(f"[{method}] federated training done in {fl_seconds:.0f} s; evaluating")
        summary = _evaluate(cfg, manifest, tmp, method, settings, site_map, fl_seconds, echo)
    echo(f"[{method}] wrote {out_dir} ({time.perf_counter() - t0:.0f} s)")
    return summary


def _run_job(recipe, env: str, tmp: Path, clients, poc_workspace, startup_kit, username, timeout, echo) -> None:
    """Run ``recipe`` in the ``env`` environment; afterwards the controller's run files are in ``tmp``."""
    if env == "sim":
        from nvflare.recipe import SimEnv

        recipe.run(SimEnv(clients=clients, num_threads=len(clients), workspace_root=str(tmp / "flare"))).get_result()
    elif env == "poc":
        from flare_vlp.fl.deploy import run_in_poc
        from flare_vlp.fl.poc import make_poc_env

        workspace = Path(poc_workspace).absolute() if poc_workspace else tmp / "flare" / "poc"
        run_in_poc(recipe, make_poc_env(workspace, clients), timeout=timeout, echo=echo)
    else:
        from nvflare.recipe import ProdEnv

        from flare_vlp.fl.deploy import collect_run_files, run_in_prod

        prod = ProdEnv(startup_kit_location=str(Path(startup_kit).absolute()), username=username, login_timeout=30)
        result = run_in_prod(recipe, prod, tmp / "flare" / "result", timeout=timeout, echo=echo)
        collect_run_files(result, tmp)


def _evaluate(cfg, manifest, root: Path, method: str, settings, site_map, fl_seconds: float, echo) -> dict:
    """Evaluate the finished run with the method's evaluator, add what every run has, write the summary."""
    from flare_vlp.experiments.federated_eval import RunEvaluation

    evaluator = resolve(get_method(method).evaluator)
    result = evaluator(RunEvaluation(cfg, manifest, root, method, settings, dict(site_map), echo))
    run = RunFolder(root)
    try:
        run.log("eval", site="global", **result.summary)
        losses = _round_losses(root / "metrics.jsonl")
        if losses:
            plot_losses(losses, root / "plots" / "round_loss.png", title=f"{method}: site train loss per round")
        for plot in get_method(method).plots:  # the method's own plots of the run (MethodSpec.plots)
            resolve(plot)(root, method)
        rounds = global_loss_by_round(root / "metrics.jsonl")
        extra = {**result.extra, "seconds_federated": round(fl_seconds, 1), "global_loss_by_round": rounds}
        extra["convergence"] = convergence(rounds, source="global held-out loss per round")
        run.write_summary(method, "federated", result.summary, **extra)
    finally:
        run.close()
    return result.summary


def _events(metrics: Path, kind: str) -> list[dict]:
    if not metrics.is_file():
        return []
    events = (json.loads(line) for line in metrics.read_text().splitlines() if line.strip())
    return [e for e in events if e.get("event") == kind]


def _round_losses(metrics: Path) -> dict[str, list[float]]:
    """Per-site train loss by round, from the controller's ``site`` events of the full-network ``train`` task."""
    out: dict[str, list[float]] = {}
    for event in _events(metrics, "site"):
        if event.get("train_loss") is not None and event.get("task", "train") == "train":
            out.setdefault(event["site"], []).append(float(event["train_loss"]))
    return out
