"""``flare-vlp deploy dashboard``: provision through the FLARE dashboard on loopback, start the system from its
startup kits, run a method on it, stop everything (see :mod:`flare_vlp.recipes.dashboard_run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flare_vlp.methods.registry import get_method, method_names

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
    b.add_argument("--method", default=method_names()[0], choices=method_names())
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
    from flare_vlp.methods.run_spec import DataSource, RunSpec
    from flare_vlp.recipes.dashboard_run import DEFAULT_CREDENTIAL, run_with_dashboard

    sites = tuple(f"site-{i + 1}" for i in range(args.sites)) if args.sites else None
    spec = RunSpec(
        args.method, config=args.config, sites=sites, num_rounds=args.rounds, local_steps=args.local_steps,
        data=DataSource(data_dir=str(args.data_dir) if args.data_dir else None),
    )  # fmt: skip
    credential = args.credential or DEFAULT_CREDENTIAL
    summary = run_with_dashboard(args.out, spec, credential=credential, timeout=args.timeout)
    print(comparison_table({args.method: summary}, extra=get_method(args.method).report_columns))
    return 0
