"""How much of a method difference the test sets alone can make: a test-set bootstrap of bench_feddra's runs.

Run:  .venv/bin/python bench/bench_metric_noise.py [--out runs/bench_feddra] [--seeds 1 2] [--runs fedavg fedprox]
      [--reference fedavg] [--n-boot 500]

For each seed it loads every finished run's final model (``models/global.safetensors``, or the centralized run's
``models/model.safetensors``; local-only runs have one model per site and are skipped), scores the seed's test images
once per model, and resamples the images of every test group with replacement (``flare_vlp.evaluation.bootstrap``),
the same draws for every model. Prints, for zero-shot AUC pooled / worst site / unseen site:
  - per run and seed: the value, its bootstrap std and 95% interval (what another draw of as many test images gives);
  - per run and seed against ``--reference``: the paired difference, its std and 95% interval;
  - over seeds: the seed-to-seed std of each run's metric beside its mean bootstrap std (the share of the seed spread
    the finite test sets alone account for).
Writes ``metric_noise.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from flare_vlp.evaluation.bootstrap import (
    ZERO_SHOT_HEADLINE,
    bootstrap_zero_shot,
    interval,
    score_test_set,
    zero_shot_headline,
)

sys.path.insert(0, str(Path(__file__).parent))
from bench_feddra import RUNS, _merge  # noqa: E402  (the runs' settings: one definition)

MODEL_FILES = ("global.safetensors", "model.safetensors")


def run_config(name: str, seed: int, config: str):
    from flare_vlp.config import load_config

    return load_config(config, _merge({"seed": seed}, RUNS[name].get("overrides", {})))


def score_runs(out: Path, seed: int, names: list[str], config: str, log) -> dict[str, dict]:
    """name -> {"scores", "labels", "sites", "findings", "data"} for the finished runs of ``seed`` that have one
    global model."""
    from flare_vlp.experiments.builders import (
        build_dataset,
        build_model,
        build_tokenizer,
        default_data_dir,
        load_model_weights,
        prepare_manifest,
    )

    scored, tests = {}, {}  # tests: data folder -> (test set, findings), built once for the runs that share it
    for name in names:
        run_dir = out / f"seed-{seed}" / name
        files = [run_dir / "models" / f for f in MODEL_FILES if (run_dir / "models" / f).is_file()]
        if not (run_dir / "summary.json").is_file() or not files:
            log(f"seed {seed} {name}: no finished run with one global model in {run_dir}; skipped")
            continue
        cfg = run_config(name, seed, config)
        data_dir = default_data_dir(cfg, out)
        if data_dir not in tests:
            manifest = prepare_manifest(cfg, data_dir)
            tests[data_dir] = (build_dataset(manifest.select(split="test"), cfg.data, train=False), manifest.findings)
        test, findings = tests[data_dir]
        model = load_model_weights(build_model(cfg.model, seed=cfg.seed), files[0])
        scores, labels, sites = score_test_set(
            model, build_tokenizer(cfg.model), test, findings, batch_size=cfg.eval.batch_size,
            max_length=cfg.data.max_text_length,
        )  # fmt: skip
        scored[name] = {"scores": scores, "labels": labels, "sites": sites, "findings": findings, "data": str(data_dir)}
    return scored


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_feddra"), help="bench_feddra's run folder")
    p.add_argument("--config", default="fedbench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=[n for n in RUNS if n != "local"], choices=list(RUNS))
    p.add_argument("--reference", default="fedavg", choices=list(RUNS), help="the run differences are taken against")
    p.add_argument("--n-boot", type=int, default=500)
    args = p.parse_args(argv)
    out = args.out.absolute()
    t0 = time.perf_counter()
    names = list(dict.fromkeys([args.reference, *args.runs]))
    per_seed: dict[int, dict] = {}
    for seed in args.seeds:
        scored = score_runs(out, seed, names, args.config, print)
        # a run on other test images (e.g. the IID scenario) is bootstrapped on its own, never paired
        groups: dict[str, list[str]] = {}
        for name, s in scored.items():
            groups.setdefault(s["data"], []).append(name)
        reps: dict[str, dict[str, np.ndarray]] = {}
        for members in groups.values():
            first = scored[members[0]]
            reps.update(
                bootstrap_zero_shot(
                    {n: scored[n]["scores"] for n in members},
                    first["labels"],
                    first["sites"],
                    first["findings"],
                    n_boot=args.n_boot,
                    seed=seed,
                )  # fmt: skip
            )
        ref_data = scored[args.reference]["data"] if args.reference in scored else None
        values = {n: zero_shot_headline(s["scores"], s["labels"], s["sites"], s["findings"]) for n, s in scored.items()}
        rows = {}
        for name, s in scored.items():
            value = values[name]
            row = {}
            for metric in ZERO_SHOT_HEADLINE:
                std, low, high = interval(reps[name][metric])
                row[metric] = {"value": value[metric], "boot_std": std, "ci95": [low, high]}
                if name != args.reference and s["data"] == ref_data:
                    diff = reps[name][metric] - reps[args.reference][metric]
                    d_std, d_low, d_high = interval(diff)
                    row[metric]["diff"] = value[metric] - values[args.reference][metric]
                    row[metric]["diff_std"], row[metric]["diff_ci95"] = d_std, [d_low, d_high]
            rows[name] = row
        per_seed[seed] = rows
        print(f"\nseed {seed} (n_boot {args.n_boot}); value [bootstrap std; 95% interval]; vs {args.reference}: diff")
        print("| run | " + " | ".join(ZERO_SHOT_HEADLINE) + " |")
        print("|---|" + "---|" * len(ZERO_SHOT_HEADLINE))
        for name, row in rows.items():
            cells = []
            for metric in ZERO_SHOT_HEADLINE:
                c = row[metric]
                cell = f"{c['value']:.3f} [{c['boot_std']:.3f}; {c['ci95'][0]:.3f}–{c['ci95'][1]:.3f}]"
                if "diff" in c:
                    cell += (
                        f"; Δ {c['diff']:+.3f} [{c['diff_std']:.3f}; {c['diff_ci95'][0]:+.3f}–{c['diff_ci95'][1]:+.3f}]"
                    )
                cells.append(cell)
            print(f"| {name} | " + " | ".join(cells) + " |")
    spread = {}
    print("\nover seeds: seed std of the value | mean bootstrap std (test-set sampling alone)")
    print("| run | n | " + " | ".join(f"{m} seed std | {m} bootstrap std" for m in ZERO_SHOT_HEADLINE) + " |")
    print("|---|---|" + "---|---|" * len(ZERO_SHOT_HEADLINE))
    for name in names:
        seeds = [s for s in per_seed if name in per_seed[s]]
        if len(seeds) < 2:
            continue
        spread[name] = {}
        cells = []
        for metric in ZERO_SHOT_HEADLINE:
            values = [per_seed[s][name][metric]["value"] for s in seeds]
            boot = [per_seed[s][name][metric]["boot_std"] for s in seeds]
            spread[name][metric] = {"seed_std": float(np.std(values, ddof=1)), "mean_boot_std": float(np.mean(boot))}
            cells.append(f"{spread[name][metric]['seed_std']:.3f} | {spread[name][metric]['mean_boot_std']:.3f}")
        print(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")
    result = {"n_boot": args.n_boot, "reference": args.reference, "seeds": per_seed, "over_seeds": spread}
    (out / "metric_noise.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; wrote {out / 'metric_noise.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
