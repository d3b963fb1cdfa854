"""``flare-vlp train``, ``flare-vlp report`` and ``flare-vlp config``: baselines, comparisons and presets."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a centralized or local-only baseline and write its run folder")
    t.add_argument("--config", default="demo", help="preset name (tiny, demo, bench) or a YAML path")
    t.add_argument("--mode", choices=["centralized", "local"], required=True)
    t.add_argument("--out", type=Path, required=True, help="run folder to create (its parent must exist)")
    t.add_argument("--data-dir", type=Path, default=None, help="SynthCXR folder (default: OUT/../data/synthcxr-<hash>)")
    t.add_argument("--device", default="auto", help="cpu, cuda or auto")
    t.add_argument("--seed", type=int, default=None, help="override the config's seed")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.set_defaults(func=_train)

    r = sub.add_parser("report", help="compare run folders: markdown table and a bar plot")
    r.add_argument("runs", nargs="+", type=Path)
    r.add_argument("--plot", type=Path, default=None, help="PNG to write (default: no plot)")
    r.set_defaults(func=_report)

    c = sub.add_parser("config", help="list or show the packaged config presets")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    csub.add_parser("list", help="preset names").set_defaults(func=_config_list)
    show = csub.add_parser("show", help="print a preset (or a YAML file) fully resolved")
    show.add_argument("name")
    show.set_defaults(func=_config_show)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return name


def _train(args: argparse.Namespace) -> int:
    from flare_vlp.config import load_config
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.report import comparison_table

    overrides = {"seed": args.seed} if args.seed is not None else None
    cfg = load_config(args.config, overrides)
    summary = run_baseline(
        cfg, args.out, args.mode, data_dir=args.data_dir, device=resolve_device(args.device), overwrite=args.overwrite
    )
    print(comparison_table({args.mode: summary}))
    return 0


def _report(args: argparse.Namespace) -> int:
    from flare_vlp.experiments.report import compare_runs
    from flare_vlp.methods.registry import report_columns

    print(compare_runs(args.runs, plot_path=args.plot, columns=report_columns()))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _config_list(args: argparse.Namespace) -> int:
    from flare_vlp.config import list_presets

    print("\n".join(list_presets()))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import resolved_config_dict
    from flare_vlp.experiments.run_folder import json_safe

    print(yaml.safe_dump(json_safe(resolved_config_dict(load_config(args.name))), sort_keys=False), end="")
    return 0
