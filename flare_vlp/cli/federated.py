"""``flare-vlp run`` (a federated method in the simulator, a POC system or a provisioned system) and
``flare-vlp jobs export|allow`` (the job folders, the sites' class allow-list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flare_vlp.cli.method_args import add_method_arguments, fl_settings, given_method_arguments
from flare_vlp.methods.registry import get_method, method_names

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
    r.add_argument("--method", required=True, choices=method_names())
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
    r.add_argument("--rounds", type=int, default=None, help="federated rounds (default: the YAML's fl.rounds, else 5)")
    r.add_argument("--local-steps", type=int, default=None, help="steps per round (default: one local epoch)")
    r.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"], help="torch device of every site")
    r.add_argument(
        "--roles",
        default=None,
        help="site roles of a multi-role method as role:count pairs mapped onto the sites in order, e.g. "
        "image:2,text:1,image_text:2 (default: the method's default roles, cycled)",
    )
    add_method_arguments(r)
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
    e.add_argument("--method", action="append", default=None, choices=method_names(), help="only these (repeatable)")
    e.set_defaults(func=_export)
    a = jsub.add_parser("allow", help="allow flare_vlp components at a site (its local/ folder or a simulator WS)")
    a.add_argument("local_dir", type=Path, help="e.g. WS/local for `nvflare simulator -w WS`, or <startup kit>/local")
    a.set_defaults(func=_allow)


def _run(args: argparse.Namespace) -> int:
    from flare_vlp.config import load_config
    from flare_vlp.methods.run_spec import DataSource, RunSpec

    overrides = {"seed": args.seed} if args.seed is not None else None
    fl = fl_settings(load_config(args.config, overrides).fl, args.method)
    spec = RunSpec(
        args.method, method_settings={**fl["method_config"], **given_method_arguments(args)}, config=args.config,
        config_overrides=overrides, num_rounds=args.rounds or fl["rounds"],
        local_steps=args.local_steps or fl["local_steps"], device=args.device or fl["device"],
        sites=tuple(args.sites.split(",")) if args.sites else None, role_mix=args.roles,
        data=DataSource(data_dir=str(args.data_dir) if args.data_dir else None),
    )  # fmt: skip
    spec = spec.with_default_data(args.out.absolute().parent)
    spec.validate()  # refused here, in about a second, before torch, MONAI and FLARE are imported

    from flare_vlp.experiments.report import comparison_table
    from flare_vlp.recipes.run import FederatedRunError, run_federated

    try:
        summary = run_federated(
            spec, args.out, env=args.env, poc_workspace=args.poc_workspace, startup_kit=args.startup_kit,
            username=args.username, timeout=args.timeout, overwrite=args.overwrite,
        )  # fmt: skip
    except FederatedRunError as e:  # the cause as the last line, not FLARE's return code
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(comparison_table({args.method: summary}, extra=get_method(args.method).report_columns))
    return 0


def _export(args: argparse.Namespace) -> int:
    from flare_vlp.recipes.export import export_jobs

    data_dir = args.data_dir or f"{JOB_DATA_ROOT}/synthcxr-{args.config}"
    paths = export_jobs(
        args.out, config=args.config, data_dir=data_dir, num_rounds=args.rounds, n_clients=args.clients,
        methods=args.method,
    )  # fmt: skip
    for method, path in paths.items():
        print(f"{method}: {path}")
    return 0


def _allow(args: argparse.Namespace) -> int:
    from flare_vlp.fl.policy import allow_flare_vlp

    print(f"wrote {allow_flare_vlp(args.local_dir)}")
    return 0
