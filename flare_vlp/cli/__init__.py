"""The ``flare-vlp`` command line: one sub-command group per concern, each in its own module.

Heavy imports (torch, MONAI, nvflare) happen inside the command that needs them, so ``flare-vlp --help`` is instant.
Every expected failure (bad manifest, bad config, bad output path) ends with one ``error:`` line and exit code 2;
nothing half-written stays behind because every writer in the package writes to a temp path and renames.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flare_vlp import __version__
from flare_vlp.cli import data as data_cmd
from flare_vlp.cli import demo as demo_cmd
from flare_vlp.cli import deploy as deploy_cmd
from flare_vlp.cli import experiments as experiments_cmd
from flare_vlp.cli import federated as federated_cmd

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flare-vlp",
        description="Federated medical vision-language pre-training on NVIDIA FLARE.",
    )
    parser.add_argument("--version", action="version", version=f"flare-vlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    experiments_cmd.add_parsers(sub)
    federated_cmd.add_parsers(sub)
    deploy_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        # ManifestError, OutputPathError, ImageLoadError and config errors are ValueErrors that name the place.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
