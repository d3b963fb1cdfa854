"""``flare-vlp data ...``: generate SynthCXR, validate a manifest, convert a real dataset, re-partition, montage."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["add_parser", "counts_table"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="create, check and convert image-report manifests")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    s = dsub.add_parser("synth", help="generate the SynthCXR benchmark (PNGs + manifest.jsonl)")
    s.add_argument("--out", required=True, type=Path, help="output folder (its parent must exist)")
    s.add_argument("--sites", type=int, default=5, help="number of federated sites (default 5)")
    s.add_argument("--samples", type=int, default=2000, help="train+val samples over all sites (default 2000)")
    s.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew alpha; smaller = more skew")
    s.add_argument("--acq-shift", type=float, default=1.0, help="acquisition-shift scale (0 = none)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (64, 128, 224)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scenario", default="default", help="preset: default, iid, small_shifted_site, noisy_reports")
    s.add_argument("--test-per-site", type=int, default=None, help="label-balanced test images per site")
    s.add_argument("--unseen-site", action="store_true", help="also generate a held-out 'unseen' site (test only)")
    s.add_argument("--public", type=int, default=0, help="public-split samples (for methods that read one)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    s.set_defaults(func=_synth)

    c = dsub.add_parser("check", help="validate a manifest and print counts per site / split / finding")
    c.add_argument("manifest", type=Path)
    c.add_argument("--findings", nargs="+", default=None, help="label vocabulary (default: known CXR findings)")
    c.add_argument("--allow-empty-report", action="store_true", help="accept rows without report text")
    c.add_argument("--allow-empty-image", action="store_true", help="accept report-only rows (text-only sites)")
    c.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")
    c.add_argument("--decode", action="store_true", help="also decode every image through the MONAI loader")
    c.add_argument("--json", action="store_true", help="print the counts as JSON")
    c.set_defaults(func=_check)

    v = dsub.add_parser("convert", help="convert a real dataset layout to a manifest")
    v.add_argument("source", help="mimic-cxr | chexpert | folder")
    v.add_argument("root", type=Path, help="the dataset's root folder")
    v.add_argument("--out", required=True, type=Path, help="manifest to write (.jsonl or .csv)")
    v.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="converter option, e.g. -o uncertain=ones -o site=hospital-a (JSON values accepted)",
    )
    v.set_defaults(func=_convert)

    t = dsub.add_parser("partition", help="re-assign site and split of a pooled manifest (Dirichlet label skew)")
    t.add_argument("manifest", type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--sites", type=int, required=True)
    t.add_argument("--alpha", type=float, default=0.5, help="label-skew alpha (inf = IID)")
    t.add_argument("--size-beta", type=float, default=None, help="Dirichlet concentration of site sizes")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--allow-empty-report", action="store_true")
    t.set_defaults(func=_partition)

    m = dsub.add_parser("montage", help="a labelled PNG grid of a SynthCXR folder or manifest")
    m.add_argument("data", type=Path, help="a SynthCXR folder or a manifest")
    m.add_argument("--out", required=True, type=Path, help="PNG to write")
    m.add_argument("--by", choices=["finding", "site"], default="finding")
    m.add_argument("--per-row", type=int, default=8)
    m.set_defaults(func=_montage)


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

    overrides = dict(
        sites=args.sites,
        samples=args.samples,
        alpha=args.alpha,
        acq_shift=args.acq_shift,
        size=args.size,
        seed=args.seed,
        unseen_site=args.unseen_site,
        public_samples=args.public,
    )
    if args.test_per_site is not None:
        overrides["test_per_site"] = args.test_per_site
    cfg = SynthConfig.preset(args.scenario, **overrides)
    bar = tqdm(total=None, unit="img", desc="SynthCXR", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        summary = generate_synthcxr(cfg, args.out, workers=args.workers, progress=progress, overwrite=args.overwrite)
    finally:
        bar.close()
    print(summary.to_text())
    return 0


def _check(args: argparse.Namespace) -> int:
    from flare_vlp.data.manifest import read_manifest

    t0 = time.perf_counter()
    manifest = read_manifest(
        args.manifest,
        findings=args.findings,
        check_images=not args.no_check_images,
        allow_empty_report=args.allow_empty_report,
        allow_empty_image=args.allow_empty_image,
    )
    if args.decode:
        from flare_vlp.data.transforms import load_image

        for rec in (r for r in manifest if r.image):
            try:
                load_image(rec.image)
            except ValueError as e:
                raise ValueError(f"{args.manifest}: record '{rec.id}': {e}") from None
    counts = manifest.counts()
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    elapsed = time.perf_counter() - t0
    print(f"{args.manifest}: OK, {counts['total']} rows, {len(manifest.findings)} findings ({elapsed:.1f} s)")
    print(counts_table(manifest, counts))
    return 0


def counts_table(manifest, counts: dict) -> str:
    """Markdown table: one row per site, columns = split sizes and positives per finding."""
    splits = [s for s in ("train", "val", "test", "public") if s in counts["split"]]
    header = ["site", *splits, "total", *manifest.findings]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for site in manifest.sites:
        row = [site] + [str(counts["site_split"].get(f"{site}/{s}", 0)) for s in splits]
        row += [str(counts["site"][site])] + [str(counts["site_finding"][site][f]) for f in manifest.findings]
        lines.append("| " + " | ".join(row) + " |")
    total = ["**all**"] + [str(counts["split"][s]) for s in splits] + [str(counts["total"])]
    total += [str(counts["finding"][f]) for f in manifest.findings]
    lines.append("| " + " | ".join(total) + " |")
    return "\n".join(lines)


def _parse_options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option '{pair}': expected KEY=VALUE")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _convert(args: argparse.Namespace) -> int:
    from flare_vlp.data.sources import CONVERTERS

    if args.source not in CONVERTERS:
        raise ValueError(f"unknown source '{args.source}'; choose one of {sorted(CONVERTERS)}")
    manifest = CONVERTERS[args.source](args.root, args.out, **_parse_options(args.option))
    print(manifest.summary())
    print(counts_table(manifest, manifest.counts()))
    return 0


def _partition(args: argparse.Namespace) -> int:
    from flare_vlp.data.manifest import read_manifest, write_manifest
    from flare_vlp.data.partition import partition_manifest

    manifest = read_manifest(args.manifest, allow_empty_report=args.allow_empty_report)
    parted = partition_manifest(
        manifest,
        args.sites,
        alpha=args.alpha,
        size_beta=args.size_beta,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    write_manifest(parted.records, args.out)
    print(f"wrote {args.out}: {len(parted)} rows over {len(parted.sites)} sites")
    print(counts_table(parted, parted.counts()))
    return 0


def _montage(args: argparse.Namespace) -> int:
    from flare_vlp.data.synthetic import render_montage

    render_montage(args.data, args.out, by=args.by, per_row=args.per_row)
    print(f"wrote {args.out}")
    return 0
