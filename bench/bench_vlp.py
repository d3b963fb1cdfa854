"""Centralized VLP benchmark on SynthCXR, and the training loop's overhead against a bare PyTorch loop.

Run:  .venv/bin/python bench/bench_vlp.py [--config bench] [--out runs/bench_vlp] [--skip-quality]

1. Quality: trains the centralized baseline with the given config (default: the `bench` preset: 5 sites, alpha 0.3,
   small CNN + frozen packaged MiniLM, 64 px) and prints zero-shot AUC, linear-probe AUC and retrieval R@K — pooled,
   worst site and unseen site — next to the untrained-encoder floor.
2. Loop overhead: the same model, data and batches through `flare_vlp.training.train_loop` and through a bare
   PyTorch loop (AdamW step on the contrastive loss, nothing else); prints both samples/s and their ratio
   (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def loop_overhead(cfg, manifest, steps: int = 60, repeats: int = 3) -> dict:
    """samples/s of train_loop vs a bare loop over identical pre-collated batches (best of ``repeats``)."""
    import dataclasses

    import torch

    from flare_vlp.algorithms import contrastive_loss
    from flare_vlp.experiments.builders import build_dataset, build_loader, build_model, build_tokenizer
    from flare_vlp.training import train_loop
    from flare_vlp.training.loop import set_train_mode

    tok = build_tokenizer(cfg.model)
    ds = build_dataset(manifest.select(split="train"), cfg.data, train=True, seed=cfg.seed)
    loader = build_loader(ds, tok, batch_size=cfg.train.batch_size, max_length=cfg.data.max_text_length, shuffle=True)
    batches = [b for _, b in zip(range(steps), loader)]
    train_cfg = dataclasses.replace(cfg.train, log_every=10**9, bn_recalibration_batches=0, grad_clip=None)

    def bare(model) -> float:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        set_train_mode(model)  # same modes as train_loop: frozen towers in eval
        t0 = time.perf_counter()
        for b in batches:
            out = model(b["image"], b["input_ids"], b["attention_mask"])
            loss = contrastive_loss(
                out.image_embeds, out.text_embeds, out.logit_scale, b["labels"], cfg.train.positives
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(batches) * cfg.train.batch_size / (time.perf_counter() - t0)

    def ours(model) -> float:
        return train_loop(model, batches, train_cfg, steps=len(batches)).samples_per_s

    rates = {"bare": [], "train_loop": []}
    warm = build_model(cfg.model, seed=0)  # warm-up: fills the frozen-text memo both loops then share
    bare(warm)
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("train_loop", ours)):
            model = build_model(cfg.model, seed=0)
            model._text_memo = warm._text_memo
            rates[name].append(fn(model))
    best = {k: max(v) for k, v in rates.items()}
    return {"samples_per_s": best, "ratio": best["train_loop"] / best["bare"], "steps": len(batches), "all": rates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_vlp"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args(argv)

    from flare_vlp.config import load_config
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.builders import prepare_manifest
    from flare_vlp.experiments.report import compare_runs

    cfg = load_config(args.config, {"seed": args.seed} if args.seed is not None else None)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.out / f"data-{cfg.name}-seed{cfg.seed}"
    results: dict = {"config": args.config, "seed": cfg.seed}
    if not args.skip_quality:
        run_dir = args.out / f"centralized-{cfg.name}-seed{cfg.seed}"
        t0 = time.perf_counter()
        results["quality"] = run_baseline(cfg, run_dir, "centralized", data_dir=data_dir, overwrite=True)
        results["quality_seconds"] = round(time.perf_counter() - t0, 1)
        print(compare_runs([run_dir]))
    manifest = prepare_manifest(cfg, data_dir)
    over = loop_overhead(cfg, manifest)
    results["loop"] = over
    sps = over["samples_per_s"]
    print(
        f"[loop] train_loop {sps['train_loop']:.0f} samples/s vs bare PyTorch {sps['bare']:.0f} samples/s "
        f"over {over['steps']} identical batches: ratio {over['ratio']:.3f} (target >= 0.95)"
    )
    (args.out / f"bench_vlp-{cfg.name}-seed{cfg.seed}.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
