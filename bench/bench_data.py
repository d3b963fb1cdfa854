"""Data-layer benchmark: SynthCXR generation speed, loader throughput (cached vs uncached) and learnability.

Run:  .venv/bin/python bench/bench_data.py [--samples 10000] [--size 64] [--workers N] [--out runs/bench_data]

Prints generation samples/s, DataLoader samples/s for the uncached MONAI pipeline (decodes each PNG every epoch) and
for the cached dataset (decodes once), and per-finding AUC of a logistic regression on raw pixels trained on the
train split and scored on the per-site label-balanced test sets. The learnability check passes when every finding's
AUC is clearly above chance (> 0.55) and below perfect (< 0.99): SynthCXR must be learnable but not trivial.
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
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

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
    test = manifest.select(split="test")
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

    test_ds = CachedManifestDataset(test, size=args.size)

    def matrix(ds) -> tuple[np.ndarray, np.ndarray, list[str]]:
        xs, ys, sites = [], [], []
        for i in range(len(ds)):
            item = ds[i]
            xs.append(np.asarray(item["image"], dtype=np.float32).ravel())
            ys.append(np.asarray(item["labels"]))
            sites.append(item["site"])
        return np.stack(xs), np.stack(ys), sites

    x_tr, y_tr, _ = matrix(cached)
    x_te, y_te, site_te = matrix(test_ds)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    aucs, per_site = {}, {}
    for j, finding in enumerate(manifest.findings):
        clf = LogisticRegression(C=0.01, max_iter=300)
        clf.fit(x_tr, y_tr[:, j])
        score = clf.decision_function(x_te)
        aucs[finding] = round(float(roc_auc_score(y_te[:, j], score)), 3)
        per_site[finding] = {}
        for s in sorted(set(site_te)):
            mask = np.array([t == s for t in site_te])
            if 0 < y_te[mask, j].sum() < mask.sum():
                per_site[finding][s] = round(float(roc_auc_score(y_te[mask, j], score[mask])), 3)
    ok = all(0.55 < a < 0.99 for a in aucs.values())
    results["learnability"] = {"pooled_auc": aucs, "per_site_auc": per_site, "pass": ok}
    print("[learnability] logistic regression on pixels, AUC on the per-site label-balanced test sets:")
    sites = sorted(set(site_te))
    print("| finding | pooled | " + " | ".join(sites) + " |")
    print("|---|---|" + "---|" * len(sites))
    for f in manifest.findings:
        print(f"| {f} | {aucs[f]:.3f} | " + " | ".join(f"{per_site[f].get(s, float('nan')):.3f}" for s in sites) + " |")
    print(f"[learnability] every finding in (0.55, 0.99): {'PASS' if ok else 'FAIL'}")
    (args.out / "bench_data.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bench_data.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
