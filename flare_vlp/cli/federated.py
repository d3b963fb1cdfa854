"""``flare-vlp run`` (a federated method in the simulator, a POC system or a provisioned system) and
``flare-vlp jobs export|allow`` (the job folders, the sites' class allow-list)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers"]

JOB_DATA_ROOT = "~/.cache/flare_vlp"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run",
        help="run a federated method in FLARE (simulator, POC or a provisioned system) and write its run folder",
        description="--env sim: the FLARE simulator. --env poc: provision and start a POC system on this machine "
        "(server bound to 127.0.0.1, flare_vlp allowed at every site), run the job, always stop the system. "
        "--env prod: submit to a provisioned system with an admin startup kit; every site (server and clients) "
        "must have run `flare-vlp jobs allow <its startup kit>/local` once; the job result is downloaded.",
    )
    r.add_argument("--method", required=True, choices=["fedavg", "fedprox", "fedaid", "feddra"])
    r.add_argument(
        "--env", default="sim", choices=["sim", "poc", "prod"], help="sim: simulator; poc: local POC; prod: provisioned"
    )
    r.add_argument("--poc-workspace", type=Path, default=None, help="POC workspace (default OUT/flare/poc)")
    r.add_argument("--startup-kit", type=Path, default=None, help="prod: the admin's startup kit folder")
    r.add_argument("--username", default="admin@nvidia.com", help="prod: the admin user of --startup-kit")
    r.add_argument(
        "--sites",
        default=None,
        help="prod: comma-separated FLARE client names, in the data's site order (default site-1,...,site-N)",
    )
    r.add_argument("--timeout", type=float, default=0, help="poc/prod: seconds to wait for the job (0: no limit)")
    r.add_argument("--config", default="demo", help="preset name (tiny, demo, bench) or a YAML path")
    r.add_argument("--out", type=Path, required=True, help="run folder to create (its parent must exist)")
    r.add_argument("--rounds", type=int, default=5, help="federated rounds (default 5)")
    r.add_argument("--local-steps", type=int, default=None, help="steps per round (default: one local epoch)")
    r.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    d = r.add_argument_group("FedDRA / FedAID (methods.md section 1)")
    d.add_argument("--rho", type=float, default=1.0, help="radius of the chi-square (or KL) ball around the centre")
    d.add_argument("--eta", type=float, default=0.5, help="mirror-ascent step size of the site weights")
    d.add_argument("--divergence", default="chi2", choices=["chi2", "kl"])
    d.add_argument("--dro-center", default="uniform", choices=["uniform", "samples"], help="centre of the ball")
    d.add_argument("--signal", default="loss", choices=["loss", "excess", "normalized"], help="the DRO loss l_k")
    d.add_argument("--anchor-weight", type=float, default=1.0, help="lambda_anchor (0: no anchor loss)")
    d.add_argument("--stage1-steps", type=int, default=None, help="FedDRA deep-stage steps (default: one epoch)")
    d.add_argument("--stage2-steps", type=int, default=None, help="full-network steps (default: one epoch)")
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
        data_dir=args.data_dir, mu=args.mu, overwrite=args.overwrite, method_args=_method_args(args),
        overrides={"seed": args.seed} if args.seed is not None else None,
        env=args.env, poc_workspace=args.poc_workspace, startup_kit=args.startup_kit, username=args.username,
        clients=args.sites.split(",") if args.sites else None, timeout=args.timeout,
    )  # fmt: skip
    print(comparison_table({args.method: summary}))
    return 0


def _method_args(args: argparse.Namespace) -> dict:
    """The FedDRA / FedAID recipe arguments of ``flare-vlp run`` (none for the other methods)."""
    if args.method not in ("feddra", "fedaid"):
        return {}
    return {
        "rho": args.rho, "eta": args.eta, "divergence": args.divergence, "center": args.dro_center,
        "signal": args.signal, "anchor_weight": args.anchor_weight, "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
    }  # fmt: skip


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
