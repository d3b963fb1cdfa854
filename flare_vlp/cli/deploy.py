"""``flare-vlp deploy dashboard``: provision through the FLARE dashboard on loopback, start the system from its
startup kits, run a method on it, stop everything (see :mod:`flare_vlp.recipes.dashboard_run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_vlp.methods.registry import method_names

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("deploy", help="whole FLARE deployments on this machine (loopback only)")
    dsub = d.add_subparsers(dest="deploy_command", required=True, metavar="DEPLOY_COMMAND")
    b = dsub.add_parser(
        "dashboard",
        help="dashboard-provisioned system: dashboard, kits, server + sites from their kits, one job, stop",
        description="Start the FLARE dashboard on 127.0.0.1 (gunicorn; its database in OUT/deploy/dashboard), "
        "create the project through its REST API (server 'localhost' on a free port), register and approve "
        "site-1..site-N and an admin user, freeze, download every startup kit, allow flare_vlp in each, start the "
        "server and the sites from their kits (TLS, mutual authentication), submit the method's job with the "
        "admin's kit, follow it round by round, download its result and evaluate it into OUT/run. Every process "
        "started is stopped by PID at the end, also on errors and Ctrl-C.",
    )
    b.add_argument("--method", default="fedavg", choices=method_names())
    b.add_argument("--config", default="tiny", help="preset name (tiny, demo, bench) or a YAML path")
    b.add_argument("--out", type=Path, required=True, help="new folder: OUT/deploy (dashboard, kits), OUT/run")
    b.add_argument("--sites", type=int, default=None, help="client sites (default: the config's SynthCXR sites)")
    b.add_argument("--rounds", type=int, default=2)
    b.add_argument("--local-steps", type=int, default=None, help="steps per round (default: one local epoch)")
    b.add_argument("--data-dir", type=Path, default=None, help="SynthCXR folder (default: beside OUT)")
    b.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the job (0: no limit)")
    b.add_argument(
        "--credential", default=None, help="the dashboard's project admin 'email:password:org' (default: a local one)"
    )
    b.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from flare_vlp.experiments.report import comparison_table
    from flare_vlp.recipes.dashboard_run import DEFAULT_CREDENTIAL, run_with_dashboard

    summary = run_with_dashboard(
        args.out, args.method, config=args.config, sites=args.sites, credential=args.credential or DEFAULT_CREDENTIAL,
        num_rounds=args.rounds, local_steps=args.local_steps, data_dir=args.data_dir, timeout=args.timeout,
    )  # fmt: skip
    print(comparison_table({args.method: summary}))
    return 0
