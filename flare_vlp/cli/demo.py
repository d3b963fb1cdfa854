"""``flare-vlp demo``: the README's main job.

For now it generates the SynthCXR federation (5 heterogeneous sites, an unseen site) and prints its summary and the
per-site counts; the FLARE issues turn it into a federated comparison on the same data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main demo: SynthCXR federation (and, later, the federated comparison)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from flare_vlp.cli.data import counts_table
    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.out / "synthcxr"
    cfg = SynthConfig.preset("default", sites=5, samples=args.samples, seed=args.seed, unseen_site=True)
    print(f"[demo] generating SynthCXR into {data_dir} ...")
    summary = generate_synthcxr(cfg, data_dir, overwrite=True)
    print(summary.to_text())
    manifest = read_manifest(data_dir / "manifest.jsonl")
    print()
    print(counts_table(manifest, manifest.counts()))
    return 0
