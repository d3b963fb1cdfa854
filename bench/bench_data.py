"""Data-layer benchmark: SynthCXR generation speed, loader throughput (cached vs uncached) and learnability.

Run:  .venv/bin/python bench/bench_data.py [--samples 10000] [--size 64] [--workers N] [--out runs/bench_data]

Prints generation samples/s, DataLoader samples/s for the uncached MONAI pipeline (decodes each PNG every epoch) and
for the cached dataset (decodes once), and per-finding AUC of a logistic regression on raw pixels trained on the
train split and scored on the per-site label-balanced test sets, for the heterogeneous federation and for the IID
control. The learnability check applies to the IID control (the findings themselves, without site effects): it
passes when every finding's AUC is clearly above chance (> 0.55) and below perfect (< 0.99). The heterogeneous
figures show the site effects (an inverted-display site flips a pixel-linear model's sign) that FL methods face.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _loader_rate(dataset, batch_size: int, max_batches: int | None = None) -> tuple[float, int]:
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    n = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(loader):
        n += len(batch["image"])
        if max_batches is not None and i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0), n


def _matrix(ds) -> tuple[np.ndarray, np.ndarray, list[str]]:
    xs, ys, sites = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        xs.append(np.asarray(item["image"], dtype=np.float32).ravel())
        ys.append(np.asarray(item["labels"]))
        sites.append(item["site"])
    return np.stack(xs), np.stack(ys), sites


def learnability(manifest, size: int, train_ds=None, cs=(1e-4, 1e-3, 1e-2)) -> dict:
    """Per-finding AUC of an L2 logistic regression on standardised pixels: pooled and per test site.

    The inverse regularisation C is chosen per finding on the val split (pixels are 4096-dimensional and the train
    split a few thousand images, so the right C matters); the test split is only used for the reported AUCs.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from flare_vlp.data.datasets import CachedManifestDataset

    train_ds = train_ds or CachedManifestDataset(manifest.select(split="train"), size=size)
    x_tr, y_tr, _ = _matrix(train_ds)
    x_va, y_va, _ = _matrix(CachedManifestDataset(manifest.select(split="val"), size=size))
    x_te, y_te, site_te = _matrix(CachedManifestDataset(manifest.select(split="test"), size=size))
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_va, x_te = (x_tr - mean) / std, (x_va - mean) / std, (x_te - mean) / std
    pooled, per_site, chosen = {}, {}, {}
    sites = np.array(site_te)
    for j, finding in enumerate(manifest.findings):
        fits = {c: LogisticRegression(C=c, max_iter=300).fit(x_tr, y_tr[:, j]) for c in cs}
        val_auc = {
            c: roc_auc_score(y_va[:, j], m.decision_function(x_va)) if 0 < y_va[:, j].sum() < len(y_va) else 0
            for c, m in fits.items()
        }
        chosen[finding] = max(val_auc, key=val_auc.get)
        score = fits[chosen[finding]].decision_function(x_te)
        pooled[finding] = round(float(roc_auc_score(y_te[:, j], score)), 3)
        per_site[finding] = {
            s: round(float(roc_auc_score(y_te[sites == s, j], score[sites == s])), 3)
            for s in sorted(set(site_te))
            if 0 < y_te[sites == s, j].sum() < (sites == s).sum()
        }
    return {"pooled": pooled, "per_site": per_site, "C": chosen}


def _print_learnability(title: str, res: dict, findings) -> None:
    sites = sorted({s for f in findings for s in res["per_site"][f]})
    print(f"\n{title}")
    print("| finding | pooled | " + " | ".join(sites) + " |")
    print("|---|---|" + "---|" * len(sites))
    for f in findings:
        cells = " | ".join(f"{res['per_site'][f].get(s, float('nan')):.3f}" for s in sites)
        print(f"| {f} | {res['pooled'][f]:.3f} | {cells} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_data"))
    args = parser.parse_args(argv)

    import torch

    from flare_vlp.data.datasets import CachedManifestDataset, ManifestDataset
    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

    torch.set_num_threads(os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.out / "synthcxr"
    shutil.rmtree(data_dir, ignore_errors=True)
    cfg = SynthConfig.preset(
        "default", sites=args.sites, samples=args.samples, alpha=args.alpha, size=args.size, seed=args.seed
    )
    t0 = time.perf_counter()
    summary = generate_synthcxr(cfg, data_dir, workers=args.workers)
    gen_s = time.perf_counter() - t0
    manifest = read_manifest(data_dir / "manifest.jsonl")
    n_total = len(manifest)
    results: dict = {
        "config": {
            "samples": args.samples,
            "size": args.size,
            "sites": args.sites,
            "alpha": args.alpha,
            "cpu_count": os.cpu_count(),
        }
    }
    results["generation"] = {"images": n_total, "seconds": round(gen_s, 2), "samples_per_s": round(n_total / gen_s, 1)}
    print(summary.to_text())
    print(
        f"\n[generation] {n_total} images (train+val {args.samples} + per-site test sets) in {gen_s:.1f} s "
        f"= {n_total / gen_s:.0f} samples/s"
    )

    train = manifest.select(split="train")
    uncached = ManifestDataset(train, size=args.size)
    rate_u, n_u = _loader_rate(uncached, 64, max_batches=40)
    t0 = time.perf_counter()
    cached = CachedManifestDataset(train, size=args.size)
    build_s = time.perf_counter() - t0
    rate_c, n_c = _loader_rate(cached, 64)
    results["loader"] = {
        "uncached_samples_per_s": round(rate_u, 1),
        "cached_samples_per_s": round(rate_c, 1),
        "cache_build_seconds": round(build_s, 2),
        "speedup": round(rate_c / rate_u, 1),
    }
    print(f"[loader] uncached MONAI pipeline: {rate_u:.0f} samples/s ({n_u} samples, batch 64, num_workers 0)")
    print(
        f"[loader] cached: {rate_c:.0f} samples/s over a full epoch of {n_c} (cache built once in {build_s:.1f} s);"
        f" x{rate_c / rate_u:.1f}"
    )

    print("[learnability] logistic regression on raw pixels, AUC on the per-site label-balanced test sets")
    het = learnability(manifest, args.size, cached)
    _print_learnability(
        f"heterogeneous federation ('default', alpha {args.alpha}, acq-shift 1)", het, manifest.findings
    )
    iid_dir = args.out / "synthcxr_iid"
    shutil.rmtree(iid_dir, ignore_errors=True)
    iid_cfg = SynthConfig.preset("iid", sites=args.sites, samples=args.samples // 2, size=args.size, seed=args.seed)
    generate_synthcxr(iid_cfg, iid_dir, workers=args.workers)
    iid_manifest = read_manifest(iid_dir / "manifest.jsonl")
    iid = learnability(iid_manifest, args.size)
    _print_learnability("IID control ('iid': no label skew, no acquisition shift)", iid, iid_manifest.findings)
    ok = all(0.55 < a < 0.99 for a in iid["pooled"].values())
    results["learnability"] = {"heterogeneous": het, "iid": iid, "pass": ok}
    print(f"[learnability] IID control: every finding in (0.55, 0.99): {'PASS' if ok else 'FAIL'}")
    (args.out / "bench_data.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bench_data.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
