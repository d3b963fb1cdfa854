"""``flare-vlp run`` (a federated method in the simulator) and ``flare-vlp jobs export`` (the job folders)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers"]

JOB_DATA_ROOT = "~/.cache/flare_vlp"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a federated method in the FLARE simulator and write its run folder")
    r.add_argument("--method", required=True, choices=["fedavg", "fedprox"])
    r.add_argument("--env", default="sim", choices=["sim"], help="execution environment (sim = FLARE simulator)")
    r.add_argument("--config", default="demo", help="preset name (tiny, demo, bench) or a YAML path")
    r.add_argument("--out", type=Path, required=True, help="run folder to create (its parent must exist)")
    r.add_argument("--rounds", type=int, default=5, help="federated rounds (default 5)")
    r.add_argument("--local-steps", type=int, default=None, help="steps per round (default: one local epoch)")
    r.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    r.add_argument("--data-dir", type=Path, default=None, help="SynthCXR folder (default: OUT/../data/synthcxr-<hash>)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=_run)

    j = sub.add_parser("jobs", help="FLARE job folders")
    jsub = j.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")
    e = jsub.add_parser("export", help="write one job folder per method (using the installed flare_vlp)")
    e.add_argument("--out", type=Path, default=Path("jobs"))
    e.add_argument("--config", default="tiny")
    e.add_argument(
        "--data-dir",
        default=None,
        help="SynthCXR folder the sites read, made if missing (default ~/.cache/flare_vlp/...)",
    )
    e.add_argument("--rounds", type=int, default=2)
    e.add_argument("--clients", type=int, default=2)
    e.set_defaults(func=_export)
    a = jsub.add_parser("allow", help="allow flare_vlp components at a site (its local/ folder or a simulator WS)")
    a.add_argument("local_dir", type=Path, help="e.g. WS/local for `nvflare simulator -w WS`, or <startup kit>/local")
    a.set_defaults(func=_allow)


def _run(args: argparse.Namespace) -> int:
    from flare_vlp.experiments.report import comparison_table
    from flare_vlp.fl.run import run_federated

    summary = run_federated(
        args.config, args.out, args.method, num_rounds=args.rounds, local_steps=args.local_steps,
        data_dir=args.data_dir, mu=args.mu, overwrite=args.overwrite,
        overrides={"seed": args.seed} if args.seed is not None else None,
    )  # fmt: skip
    print(comparison_table({args.method: summary}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from flare_vlp.fl.job_export import export_jobs

    data_dir = args.data_dir or f"{JOB_DATA_ROOT}/synthcxr-{args.config}"
    paths = export_jobs(args.out, config=args.config, data_dir=data_dir, num_rounds=args.rounds, n_clients=args.clients)
    for method, path in paths.items():
        print(f"{method}: {path}")
    return 0


def _allow(args: argparse.Namespace) -> int:
    from flare_vlp.fl.job_export import allow_flare_vlp

    print(f"wrote {allow_flare_vlp(args.local_dir)}")
    return 0
