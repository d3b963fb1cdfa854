"""``flare-vlp run``: a federated method in FLARE (simulator, POC or a provisioned system), evaluated like every
baseline.

Steps: prepare the data (SynthCXR generated once, before the sites start), build the method's Recipe with one
client per training site, run it in ``SimEnv`` / a POC system / ``ProdEnv`` (:mod:`flare_vlp.fl.deploy`), then load
the final global model and evaluate it with the same protocol as the centralized / local baselines, into the same
run-folder layout (``flare-vlp report`` compares them). The FLARE workspace (site logs, the persisted global model;
in prod the downloaded job result) is kept under ``RUN_DIR/flare``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from flare_vlp.data.manifest import Manifest
from flare_vlp.experiments.convergence import convergence, global_loss_by_round
from flare_vlp.experiments.plots import plot_losses
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.failure import failure_cause
from flare_vlp.methods.data_source import training_sites
from flare_vlp.methods.registry import get_method, method_config, resolve
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.utils.io import atomic_output_dir

__all__ = ["ENVS", "DataSource", "FederatedRunError", "RunSpec", "run_federated"]


ENVS = ("sim", "poc", "prod", "inprocess")


class FederatedRunError(RuntimeError):
    """A FLARE run that did not complete; the message leads with the cause found in the run folder or the logs."""


def run_federated(
    spec: RunSpec,
    out_dir: str | Path,
    *,
    env: str = "sim",
    poc_workspace: str | Path | None = None,
    startup_kit: str | Path | None = None,
    username: str = "admin@nvidia.com",
    timeout: float = 0,
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict:
    """Run ``spec`` in FLARE (or in process) and write its run folder ``out_dir``; returns the headline summary.

    The spec is checked before anything starts (:meth:`~flare_vlp.methods.run_spec.RunSpec.validate`). Its data
    defaults to SynthCXR in ``OUT/../data/synthcxr-<hash>``; its ``sites`` (the FLARE client names, default
    ``site-1..site-N``) map in order onto the data's training sites (``spec.data.data_sites``: only those), and
    its roles come from ``roles``, ``role_mix`` or the method's default roles (:func:`~flare_vlp.methods.registry.
    assign_roles`); ``min_clients`` defaults to every site. FLARE sites run one torch thread each unless
    ``num_threads`` says otherwise.

    Args:
        spec: the run.
        out_dir: the run folder to create (its parent must exist).
        env: ``sim`` (simulator), ``inprocess`` (the platform's in-process runner: the same strategy and client
            algorithms in this process, no FLARE; for benchmark seed grids), ``poc`` (a POC system on this machine,
            in ``poc_workspace``, default ``RUN_DIR/flare/poc``; always stopped afterwards) or ``prod`` (a
            provisioned system: ``startup_kit`` is the admin ``username``'s startup kit; every site ran
            ``flare-vlp jobs allow``).
        timeout: seconds to wait for a POC or prod job (0: no limit).
        echo: where progress lines go.
        overwrite: replace an existing ``out_dir``.

    Raises:
        ValueError / ConfigError: a spec or environment refused before anything starts.
        FederatedRunError: the FLARE job failed; the message gives the cause (the server's ``failed`` record or
            the first error in the FLARE logs).
    """
    if env not in ENVS:
        raise ValueError(f"unknown env '{env}'; choose one of {list(ENVS)}")
    if env == "prod" and startup_kit is None:
        raise ValueError("env 'prod' needs the admin's startup kit (startup_kit / --startup-kit)")
    out_dir = Path(out_dir).absolute()
    method = spec.method
    spec = spec.with_default_data(out_dir.parent)
    cfg = spec.validate()  # every check that needs no data generated: refused here, in about a second
    t0 = time.perf_counter()
    spec, manifest = _place(spec, cfg)
    site_map = dict(spec.data.site_map)
    echo(f"[{method}] data: {len(manifest)} rows; {len(site_map)} sites {sorted(set(site_map.values()))}; "
         f"{spec.num_rounds} rounds in env '{env}'")  # fmt: skip
    settings = method_config(method, spec.method_settings)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        if env == "inprocess":
            from flare_vlp.methods.runner import run_in_process

            run_in_process(spec, tmp)
        else:
            spec = spec.replace(num_threads=spec.num_threads or 1)
            recipe = resolve(get_method(method).recipe)(spec, run_dir=None if env == "prod" else str(tmp))
            _run_job(recipe, env, tmp, poc_workspace, startup_kit, username, timeout, echo)
        fl_seconds = time.perf_counter() - t0
        echo(f"[{method}] {'in-process' if env == 'inprocess' else 'federated'} training done in {fl_seconds:.0f} s; "
             "evaluating")  # fmt: skip
        summary = _evaluate(cfg, manifest, tmp, method, settings, site_map, fl_seconds, echo)
    echo(f"[{method}] wrote {out_dir} ({time.perf_counter() - t0:.0f} s)")
    return summary


def _place(spec: RunSpec, cfg) -> tuple[RunSpec, Manifest]:
    """The data's rows (SynthCXR generated once when missing), and the spec with its FLARE sites mapped in order
    onto the data's training sites (or as its ``site_map`` says), its roles placed and ``min_clients`` set."""
    manifest = spec.data.rows(cfg)
    sites = spec.data.taking_part(training_sites(manifest))
    clients = list(spec.sites) if spec.sites else [f"site-{i + 1}" for i in range(len(sites))]
    if spec.data.site_map is None and len(clients) != len(sites):
        raise ValueError(f"{len(clients)} FLARE clients {clients} for {len(sites)} training sites {sites}")
    site_map = spec.data.site_map or dict(zip(clients, sites))
    placed = spec.replace(sites=tuple(clients), data=dataclasses.replace(spec.data, site_map=site_map))
    return placed, manifest


def _run_job(recipe, env: str, tmp: Path, poc_workspace, startup_kit, username, timeout, echo) -> None:
    """Run ``recipe`` in the ``env`` environment; afterwards the controller's run files are in ``tmp``.

    Raises:
        FederatedRunError: the job failed, with its cause (:func:`failure_cause`) as the message; FLARE's own
            error (a return code, a job status) is chained to it.
    """
    try:
        if env == "sim":
            from nvflare.recipe import SimEnv

            clients = list(recipe.spec.sites)
            env_ = SimEnv(clients=clients, num_threads=len(clients), workspace_root=str(tmp / "flare"))
            recipe.run(env_).get_result()
        elif env == "poc":
            from flare_vlp.fl.deploy import run_in_poc
            from flare_vlp.fl.poc import make_poc_env

            workspace = Path(poc_workspace).absolute() if poc_workspace else tmp / "flare" / "poc"
            run_in_poc(recipe, make_poc_env(workspace, list(recipe.spec.sites)), timeout=timeout, echo=echo)
        else:
            from nvflare.recipe import ProdEnv

            from flare_vlp.fl.deploy import collect_run_files, run_in_prod

            kit = str(Path(startup_kit).absolute())
            prod = ProdEnv(startup_kit_location=kit, username=username, login_timeout=30)
            result = run_in_prod(recipe, prod, tmp / "flare" / "result", timeout=timeout, echo=echo)
            collect_run_files(result, tmp)
    except RuntimeError as e:
        cause = failure_cause(tmp)
        if cause is None:
            raise
        raise FederatedRunError(f"{recipe.spec.method} run failed: {cause}") from e


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
