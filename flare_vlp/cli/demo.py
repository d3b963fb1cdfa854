"""``flare-vlp demo``: the README's main job — a small federated comparison on SynthCXR.

Generates the SynthCXR federation of the ``demo`` preset (5 heterogeneous sites + an unseen site), then trains and
evaluates the centralized and local-only baselines, FedAvg and FedDRA in the FLARE simulator with the same model, data
and evaluation, and prints the comparison table (the untrained floor included).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_parser", "DEMO_FEDDRA"]

DEMO_FEDDRA = {"rho": 0.1, "eta": 0.5, "anchor_weight": 1.0, "stage1_steps": 2}
"""FedDRA in the demo: the benchmark's settings (docs/methods.md), stage 1 = 2 deep-only steps (half a demo epoch)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main demo: centralized vs local-only vs FedAvg vs FedDRA on SynthCXR")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder of the runs (default runs/demo)")
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--rounds", type=int, default=None, help="federated rounds (default: the config's train.epochs)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from flare_vlp.config import load_config
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.builders import default_data_dir, prepare_manifest
    from flare_vlp.experiments.report import compare_runs
    from flare_vlp.recipes.run import run_federated

    t0 = time.perf_counter()
    seed = {"seed": args.seed} if args.seed is not None else {}
    cfg = load_config(args.config, seed or None)
    no_floor = {**seed, "eval": {"untrained_floor": False}}  # the floor is the same model for every run: once
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = default_data_dir(cfg, args.out)
    manifest = prepare_manifest(cfg, data_dir)
    print(f"[demo] SynthCXR: {len(manifest)} images, sites {manifest.sites} in {data_dir}")
    run_baseline(cfg, args.out / "centralized", "centralized", data_dir=data_dir, overwrite=True)
    run_baseline(load_config(args.config, no_floor), args.out / "local", "local", data_dir=data_dir, overwrite=True)
    rounds = args.rounds or max(1, round(cfg.train.epochs))
    for method, method_args in (("fedavg", None), ("feddra", DEMO_FEDDRA)):
        run_federated(
            args.config, args.out / method, method, num_rounds=rounds, data_dir=data_dir, overwrite=True,
            overrides=no_floor, method_args=method_args,
        )  # fmt: skip
    runs = [args.out / name for name in ("centralized", "local", "fedavg", "feddra")]
    table = compare_runs(runs, plot_path=args.out / "compare.png")
    print(f"\n## flare_vlp demo ({args.config}): SynthCXR, {time.perf_counter() - t0:.0f} s\n")
    print(table)
    print(f"\nrun folders: {', '.join(str(r) for r in runs)}; plot: {args.out / 'compare.png'}")
    return 0
