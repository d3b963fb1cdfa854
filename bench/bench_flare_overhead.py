"""FLARE overhead: a FedAvg run in the FLARE simulator vs the same local training in one plain Python process.

Run:  .venv/bin/python bench/bench_flare_overhead.py [--config demo] [--sites 3] [--rounds 3] [--local-steps 5]
      [--threads 1] [--plain-threads N] [--out runs/bench_flare]

Both arms do the same work on the same data with the same seed: per round, every site loads the global weights,
runs ``train_loop`` for ``--local-steps`` steps on its shard (same config, same per-round seed), computes its val
loss, and the server takes the n_k-weighted average of the exchanged groups. The simulator arm is
``FedAvgVLPRecipe`` in ``SimEnv`` (one client process per site, ``--threads`` torch threads each, the sites running
concurrently as FLARE runs them); the plain arm runs the sites one after the other in this process with the same
``--threads`` (``--plain-threads`` changes that, e.g. to give it every core).

Prints both wall times and their ratio (target <= 1.15), the start-up / per-round / shutdown split, the CPU seconds
of all processes, the bytes that travel per client and round both ways (FOBS-serialised Shareables, as FLARE sends
them) and how far the two arms' results differ (site losses of round 0 agree to float rounding; later rounds drift
by the rounding differences that Adam amplifies).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of every child process it has reaped."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_fedavg(cfg, data_dir: Path, sites: list[str], rounds: int, steps: int, threads: int) -> dict:
    """FedAvg without FLARE: the executor's per-site steps and the controller's average, in this process."""
    import torch

    from flare_vlp.algorithms.aggregate import weighted_average
    from flare_vlp.experiments.builders import build_model
    from flare_vlp.experiments.site_data import load_site_data
    from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy, to_torch
    from flare_vlp.training import train_loop
    from flare_vlp.training.held_out import mean_loss
    from flare_vlp.training.objectives import ContrastiveObjective
    from flare_vlp.training.schedule import round_window

    torch.set_num_threads(threads)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    data = {site: load_site_data(cfg, site, data_dir=str(data_dir)) for site in sites}
    global_params = to_numpy(build_model(cfg.model, seed=cfg.seed).state_dict())  # the persistor's initial model
    keys = exchanged_keys(data[sites[0]].model, list(DEFAULT_GROUPS), cfg.model.frozen)
    objective = ContrastiveObjective(cfg.train.positives)
    setup_s = time.perf_counter() - t0
    round_s, train_loss = [], {}
    for rnd in range(rounds):
        t_round = time.perf_counter()
        updates, weights = {}, {}
        for site, sd in data.items():
            sd.model.load_group_state_dict(to_torch({k: global_params[k] for k in keys}), strict=True)
            sd.model.set_trainable(list(DEFAULT_GROUPS))
            if cfg.model.frozen:
                sd.model.freeze(cfg.model.frozen)
            result = train_loop(
                sd.model, sd.train_loader, cfg.train, objective=objective, steps=steps, seed=cfg.seed + rnd,
                schedule_window=round_window(rnd, rounds, steps),  # the executor's run-level lr schedule
            )  # fmt: skip
            train_loss[f"{rnd}/{site}"] = result.final_loss
            sd.model.cpu()
            state = sd.model.state_dict()
            updates[site] = to_numpy({k: state[k] for k in keys})
            weights[site] = float(sd.n_train)
            if sd.val_loader is not None:
                mean_loss(sd.model, sd.val_loader, objective, "cpu")
        averaged = weighted_average(updates, weights, reference={k: global_params[k] for k in keys})
        global_params = {**global_params, **averaged}
        round_s.append(time.perf_counter() - t_round)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu_seconds() - cpu0,
        "setup_s": setup_s,
        "round_s": round_s,
        "params": global_params,
        "train_loss": train_loss,
        "n_train": {s: d.n_train for s, d in data.items()},
    }


def simulator_fedavg(config: str, data_dir: Path, out: Path, n_sites: int, rounds: int, steps: int, threads: int):
    """FedAvg's MethodRecipe in SimEnv; wall time split with the controller's per-round event times in metrics.jsonl."""
    import shutil

    from nvflare.recipe import SimEnv
    from safetensors.numpy import load_file

    from flare_vlp.methods.run_spec import DataSource, RunSpec
    from flare_vlp.recipes import MethodRecipe

    run_dir, workspace = out / "sim-run", out / "sim-ws"
    for folder in (run_dir, workspace):
        shutil.rmtree(folder, ignore_errors=True)
    spec = RunSpec("fedavg", config=config, num_rounds=rounds, min_clients=n_sites,
                   data=DataSource(data_dir=str(data_dir)), local_steps=steps, num_threads=threads)  # fmt: skip
    recipe = MethodRecipe(spec, name="bench_flare", run_dir=run_dir)
    env = SimEnv(num_clients=n_sites, num_threads=n_sites, workspace_root=str(workspace))
    t_launch, t0, cpu0 = time.time(), time.perf_counter(), _cpu_seconds()
    recipe.run(env).get_result()
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ends = [e["time"] for e in events if e["event"] == "round"]
    if len(ends) != rounds:
        raise RuntimeError(f"the simulator completed {len(ends)} of {rounds} rounds; see the logs under {workspace}")
    steady = (ends[-1] - ends[0]) / (rounds - 1) if rounds > 1 else float("nan")
    site_events = [e for e in events if e["event"] == "site"]
    train_s = [e["seconds"] for e in site_events]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "round0_end_s": ends[0] - t_launch,
        "steady_round_s": steady,
        "startup_s": _all_sites_started(workspace / "bench_flare" / "server" / "log.txt", n_sites) - t_launch,
        "round0_s": ends[0] - _all_sites_started(workspace / "bench_flare" / "server" / "log.txt", n_sites),
        "shutdown_s": wall - (ends[-1] - t_launch),  # last round's average saved -> simulator returned
        "site_train_s": sum(train_s) / len(train_s),
        "train_loss": {f"{e['round']}/{e['site']}": e["train_loss"] for e in site_events},
        "params": load_file(str(run_dir / "models" / "global.safetensors")),
    }


def _all_sites_started(server_log: Path, n_sites: int) -> float:
    """Epoch time at which the last site took its first task (the server logs each assignment; local time)."""
    from datetime import datetime

    stamps = [line[:23] for line in server_log.read_text().splitlines() if "sent task assignment to client" in line]
    if len(stamps) < n_sites:
        raise RuntimeError(f"{server_log}: {len(stamps)} task assignments logged, expected >= {n_sites}")
    return datetime.strptime(stamps[n_sites - 1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def payload_bytes(config: str, rounds: int, trained: dict) -> dict:
    """Serialized bytes per client and round: the server's task (controller's payload) and one site's result."""
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.decomposers import common_decomposers
    from nvflare.app_common.utils.fl_model_utils import FLModelUtils
    from nvflare.fuel.utils import fobs

    from flare_vlp.config import load_config
    from flare_vlp.fl.exchange import to_flmodel
    from flare_vlp.methods.messages import TaskMeta
    from flare_vlp.methods.registry import get_method, method_config
    from flare_vlp.methods.strategy import ServerContext
    from flare_vlp.methods.tensors import DEFAULT_GROUPS

    common_decomposers.register()
    cfg = load_config(config)
    strategy = get_method("fedavg").strategy_cls()(method_config("fedavg"))
    strategy.initialize(ServerContext(cfg, rounds, 1))  # builds the initial model, as the controller's run() does
    full = strategy.global_weights()
    first = strategy.round_tasks(0)[0]
    task = to_flmodel(strategy.task_message(first, "site-1"), first)
    result = FLModel(
        params_type=ParamsType.FULL,
        params={k: trained[k] for k in task.params},  # what a site sends back: the exchanged keys
        metrics={"train_loss": 1.0, "val_loss": 1.0, "samples_per_s": 1.0, "steps": 1, "seconds": 1.0},
        current_round=0,
        meta={TaskMeta.N_SAMPLES: 1, TaskMeta.SITE: "site-1", TaskMeta.TRAINABLE_GROUPS: list(DEFAULT_GROUPS)},
    )

    def size(model: FLModel) -> int:
        return len(fobs.dumps(FLModelUtils.to_shareable(model)))

    return {
        "to_site": size(task),
        "from_site": size(result),
        "full_model": size(FLModel(params_type=ParamsType.FULL, params=full)),
        "to_site_tensors": len(task.params),
        "full_tensors": len(full),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="preset or YAML (default: demo, text tower frozen)")
    parser.add_argument("--sites", type=int, default=3, help="simulated clients site-1..site-N (data sites)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per site, in both arms")
    parser.add_argument("--plain-threads", type=int, default=None, help="plain arm's threads (default: --threads)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_flare"))
    args = parser.parse_args(argv)

    import numpy as np

    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import prepare_manifest

    cfg = load_config(args.config)
    out = args.out.absolute()
    data_dir = out / f"data-{cfg.name}-seed{cfg.seed}"
    manifest = prepare_manifest(cfg, data_dir)  # generated once, outside both timings
    sites = [f"site-{i + 1}" for i in range(args.sites)]
    missing = [s for s in sites if s not in manifest.sites]
    if missing:
        raise SystemExit(f"--sites {args.sites}: data sites {missing} are not in {cfg.name!r} ({manifest.sites})")

    sim = simulator_fedavg(args.config, data_dir, out, args.sites, args.rounds, args.local_steps, args.threads)
    plain_threads = args.plain_threads or args.threads
    plain = plain_fedavg(cfg, data_dir, sites, args.rounds, args.local_steps, plain_threads)
    sizes = payload_bytes(args.config, args.rounds, {k: np.asarray(v) for k, v in sim["params"].items()})
    diffs = {
        k: float(np.max(np.abs(np.asarray(v, dtype=np.float64) - plain["params"][k]), initial=0.0))
        for k, v in sim["params"].items()
    }
    worst = max(diffs, key=diffs.get)
    diff, scale = diffs[worst], float(np.max(np.abs(plain["params"][worst]), initial=0.0))

    ratio = sim["wall_s"] / plain["wall_s"]
    later = plain["round_s"][1:] or plain["round_s"]
    plain_round = sum(later) / len(later)
    print(
        f"[setting] {cfg.name}: {args.sites} sites {plain['n_train']}, {args.rounds} rounds x {args.local_steps} "
        f"local steps (batch {cfg.train.batch_size}), torch threads per site: {args.threads} in the simulator, "
        f"{plain_threads} in the plain arm"
    )
    print(
        f"[simulator] {sim['wall_s']:.1f} s wall, {sim['cpu_s']:.0f} CPU s: start-up {sim['startup_s']:.1f} s "
        f"(launch -> every site has its first task), round 0 {sim['round0_s']:.1f} s, then "
        f"{sim['steady_round_s']:.1f} s per round (sites concurrent; {sim['site_train_s']:.1f} s train_loop per "
        f"site-round), shutdown {sim['shutdown_s']:.1f} s"
    )
    print(
        f"[plain]     {plain['wall_s']:.1f} s wall, {plain['cpu_s']:.0f} CPU s: set-up {plain['setup_s']:.1f} s, "
        f"round 0 {plain['round_s'][0]:.1f} s, then {plain_round:.1f} s per round (sites one after the other)"
    )
    print(
        f"[ratio]     simulator / plain wall = {ratio:.2f} (target <= 1.15); CPU seconds "
        f"{sim['cpu_s'] / plain['cpu_s']:.2f}"
    )
    print(
        f"[bytes]     per client and round: server -> site {sizes['to_site'] / 1e6:.2f} MB "
        f"({sizes['to_site_tensors']} of {sizes['full_tensors']} tensors), site -> server "
        f"{sizes['from_site'] / 1e6:.2f} MB; the full model would be {sizes['full_model'] / 1e6:.1f} MB"
    )
    loss_diff = max(abs(sim["train_loss"][k] - v) for k, v in plain["train_loss"].items())
    print(
        f"[check]     max |global(simulator) - global(plain)| = {diff:.2e} (in {worst}, values up to {scale:.2e}); "
        f"max |site train loss difference| = {loss_diff:.2e}"
    )
    summary = {
        "config": cfg.name,
        "args": {k: str(v) for k, v in vars(args).items()},
        "simulator": {k: v for k, v in sim.items() if k != "params"},
        "plain": {k: v for k, v in plain.items() if k != "params"},
        "ratio": ratio,
        "bytes": sizes,
        "max_abs_diff": {"value": diff, "key": worst, "scale": scale},
    }
    (out / "bench_flare_overhead.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
