"""``flare-vlp demo``: the README's main job — a small federated comparison on SynthCXR.

Generates the SynthCXR federation of the ``demo`` preset (5 heterogeneous sites + an unseen site), then trains and
evaluates the centralized and local-only baselines and the demo's federated methods (those whose registry entry has
``demo`` settings, in registration order: FedAvg and FedDRA) in the FLARE simulator with the same model, data and
evaluation, and prints the comparison table (the untrained floor included) and one figure: each run's zero-shot AUC
per site side by side and the last method's site weights per round (FedDRA's lambda). Local-only sites train as many
steps as each site trains in the federation (``fl.rounds * fl.local_steps``); the frozen trunk's features are cached
on disk under ``OUT`` once and read by every run and simulator process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from flare_vlp.methods.registry import demo_methods

    line_up = " vs ".join(["centralized", "local-only", *demo_methods()])
    p = sub.add_parser("demo", help=f"the main demo: {line_up} on SynthCXR")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder of the runs (default runs/demo)")
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--rounds", type=int, default=None, help="federated rounds (default: the config's fl.rounds)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from flare_vlp.config import load_config, merge_overrides
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.builders import default_data_dir, prepare_manifest
    from flare_vlp.experiments.plots import plot_overview
    from flare_vlp.experiments.report import compare_runs, per_site_scores, site_weights_by_round
    from flare_vlp.experiments.run_folder import load_summary
    from flare_vlp.methods.registry import demo_methods, report_columns
    from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    base = {"model": {"image_kwargs": {"cache_dir": str((args.out / "feature_cache").absolute())}}}
    base = merge_overrides(base, {"seed": args.seed} if args.seed is not None else {})
    cfg = load_config(args.config, base)
    if not cfg.model.image_kwargs.get("frozen_blocks"):
        base.pop("model")  # no cached trunk: the encoder takes no cache_dir
        cfg = load_config(args.config, base)
    rounds = args.rounds or int(cfg.fl.get("rounds") or max(1, round(cfg.train.epochs)))
    local_steps = cfg.fl.get("local_steps")
    no_floor = merge_overrides(base, {"eval": {"untrained_floor": False}})  # the floor is the same model: once
    data_dir = default_data_dir(cfg, args.out)
    manifest = prepare_manifest(cfg, data_dir)
    print(f"[demo] SynthCXR: {len(manifest)} images, sites {manifest.sites} in {data_dir}")
    run_baseline(cfg, args.out / "centralized", "centralized", data_dir=data_dir, overwrite=True)
    local = merge_overrides(no_floor, {"train": {"steps": rounds * local_steps}} if local_steps else {})
    run_baseline(load_config(args.config, local), args.out / "local", "local", data_dir=data_dir, overwrite=True)
    line_up = demo_methods()
    for method, settings in line_up.items():
        spec = RunSpec(method, method_settings=settings, config=args.config, config_overrides=no_floor,
                       num_rounds=rounds, local_steps=local_steps, data=DataSource(data_dir=str(data_dir)))  # fmt: skip
        run_federated(spec, args.out / method, overwrite=True)
    names = ("centralized", "local", *line_up)
    runs = [args.out / name for name in names]
    table = compare_runs(runs, plot_path=args.out / "compare.png", columns=report_columns())
    floor = load_summary(runs[0]).get("floor", {}).get("zero_shot_pooled")
    figure = plot_overview(
        {name: per_site_scores(run) for name, run in zip(names, runs)},
        site_weights_by_round(runs[-1] / "metrics.jsonl"),
        args.out / "demo.png",
        floor=floor,
        weights_title=f"{names[-1]}: site weights per round",
    )
    print(f"\n## flare_vlp demo ({args.config}): SynthCXR, {time.perf_counter() - t0:.0f} s\n")
    print(table)
    print(f"\nrun folders: {', '.join(str(r) for r in runs)}; figure: {figure}; bars: {args.out / 'compare.png'}")
    return 0
