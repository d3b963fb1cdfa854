"""FedOPAL benchmark: personalized LoRA fine-tuning of the packaged ImageNet EfficientNet-Lite0 (frozen, feature-cached
trunk; LoRA on the 1x1 convolutions of the trainable last stage) for multi-label finding classification on 5
heterogeneous SynthCXR sites; FedOPAL against local-only LoRA, FedAvg-LoRA, FFA-LoRA, FedSA-LoRA and full
fine-tuning FedAvg, 5 seeds, paired per-seed differences with bootstrap intervals.

Run:  .venv/bin/python bench/bench_fedopal.py [--seeds 0 1 2 3 4] [--runs fedopal ...] [--out runs/bench_fedopal]
      [--archive docs/results/fedopal]   (`--tabulate` only re-prints; the table covers every run folder under --out)

Settings, endpoints and the target are in docs/benchmarks.md ("FedOPAL benchmark"), written before any run. Every
run is a real one through ``flare_vlp.recipes.run.run_federated(env="inprocess")`` (the platform's in-process
runner; the FLARE simulator runs the same method in tests/methods/test_lora_ft.py). Runs with a ``summary.json`` are
reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_feddra_v3 import paired  # noqa: E402  (per-seed paired differences, percentile bootstrap over seeds)

CONFIG = "fedbench3"
OVERRIDES = {
    "data": {"synth": {"samples": 1500, "test_per_site": 150, "unseen_site": False, "unseen_inside": False},
             "image_size": 128},
    "model": {"image_kwargs": {"image_size": 128, "frozen_blocks": 7}, "text_encoder": "tiny_bert"},
    "train": {"batch_size": 32, "bn_recalibration_batches": 1},
}  # fmt: skip
ROUNDS, LOCAL_STEPS = 10, 8
BASELINES = ["local_lora", "fedavg_lora", "ffa_lora", "fedsa_lora", "fedavg_full"]
ABLATIONS = {"fedopal_mu0": ("fedopal", {"orth_mu": 0.0})}
"""Exploratory runs added after the main grid (docs/benchmarks.md says so): name -> (method, its settings)."""
RUNS = ["fedopal", *BASELINES, *ABLATIONS]
METRICS = ["bacc_mean", "bacc_worst", "auc_mean", "auc_worst"]


def run_one(name: str, seed: int, out: Path, fresh: bool, log) -> dict:
    from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

    method, method_args = ABLATIONS.get(name, (name, {}))
    run_dir = out / f"{name}_s{seed}"
    if (run_dir / "summary.json").is_file() and not fresh:
        return json.loads((run_dir / "summary.json").read_text())
    start = time.time()
    data = DataSource(data_dir=str(out / f"synthcxr_s{seed}"))
    spec = RunSpec(method, method_settings=method_args, config=CONFIG, config_overrides={**OVERRIDES, "seed": seed},
                   num_rounds=ROUNDS, local_steps=LOCAL_STEPS, data=data)  # fmt: skip
    run_federated(spec, run_dir, env="inprocess", overwrite=True, echo=lambda line: None)
    data = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["event"] == "round"]
    data["bench"] = {"wall_s": time.time() - start, "bytes_per_client_round": rounds[-1].get("bytes_per_client", 0)}
    (run_dir / "summary.json").write_text(json.dumps(data, indent=1, default=str))
    log(f"{name} seed {seed}: {json.dumps({m: round(data['summary'][m], 4) for m in METRICS})} "
        f"({data['bench']['wall_s']:.0f} s)")  # fmt: skip
    return data


def trainable_parameters(method: str) -> int:
    """Trainable parameters of one site's model (adapters + head, or the full trainable part)."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model
    from flare_vlp.methods.lora_ft.model import build_classifier
    from flare_vlp.methods.registry import method_config

    cfg = load_config(CONFIG, OVERRIDES)
    method = ABLATIONS.get(method, (method,))[0]
    model, _ = build_classifier(build_model(cfg.model, seed=0), 5, method_config(method).options(), 0)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def markdown(results: dict, seeds: list[int]) -> str:
    rng = np.random.default_rng(0)
    lines = ["| method | " + " | ".join(METRICS) + " | bytes / client / round | trainable params | wall s / run |",
             "|---|" + "---|" * (len(METRICS) + 3)]  # fmt: skip
    for method in RUNS:
        runs = results.get(method, {})
        if not runs:
            continue
        cells = []
        for m in METRICS:
            v = np.array([runs[s]["summary"][m] for s in runs])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else float('nan'):.3f}")
        b = next(iter(runs.values()))["bench"]["bytes_per_client_round"]
        wall = np.mean([r["bench"]["wall_s"] for r in runs.values()])
        params = trainable_parameters(method)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {b:,} | {params:,} | {wall:.0f} |")
    flat = {m: {s: r["summary"] for s, r in results.get(m, {}).items()} for m in RUNS}
    if not flat["fedopal"] or not any(flat[m] for m in BASELINES):
        return "\n".join(lines)  # no comparison without FedOPAL and a baseline
    best = max((m for m in BASELINES if flat[m]), key=lambda m: np.mean([r["bacc_mean"] for r in flat[m].values()]))
    lines += ["", f"Best baseline on mean balanced accuracy: **{best}**. Paired per-seed differences (FedOPAL minus "
              "baseline), mean [95% percentile bootstrap over seeds]:", "",
              "| FedOPAL minus | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]  # fmt: skip
    for base in [b for b in [*BASELINES, *ABLATIONS] if flat[b]]:
        row = []
        for m in METRICS:
            d = paired(flat, "fedopal", base, m, rng)
            row.append("n/a" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        label = " (best)" if base == best else " (exploratory)" if base in ABLATIONS else ""
        lines.append(f"| {base}{label} | " + " | ".join(row) + " |")
    orth = [v.get("orth_active_step") for r in results.get("fedopal", {}).values()
            for v in r.get("per_site", {}).values()]  # fmt: skip
    lines += ["", f"R_orth first active at local step {sorted(set(orth))} (per site and seed; steps counted from 0)."]
    bm = np.array([flat["fedopal"][s]["bacc_mean"] - flat[best][s]["bacc_mean"] for s in flat["fedopal"]])
    bw = np.array([flat["fedopal"][s]["bacc_worst"] - flat["local_lora"][s]["bacc_worst"] for s in flat["fedopal"]])
    lines += [f"Target (pre-registered): FedOPAL mean bacc >= best baseline ({best}): mean difference {bm.mean():+.3f} "
              f"-> {'met' if bm.mean() >= 0 else 'NOT met'}; FedOPAL worst-site bacc >= local-only: mean difference "
              f"{bw.mean():+.3f} -> {'met' if bw.mean() >= 0 else 'NOT met'}. Seeds {seeds}."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--runs", nargs="+", default=["fedopal", *BASELINES], choices=RUNS)
    p.add_argument("--out", type=Path, default=Path("runs/bench_fedopal"))
    p.add_argument("--archive", type=Path, default=None)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--tabulate", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.tabulate:
        for seed in args.seeds:
            for name in args.runs:
                run_one(name, seed, args.out, args.fresh, print)
    results: dict[str, dict[int, dict]] = {}  # the table: every run folder there is for these seeds
    for seed in args.seeds:
        for name in RUNS:
            summary_file = args.out / f"{name}_s{seed}" / "summary.json"
            if summary_file.is_file():
                results.setdefault(name, {})[seed] = json.loads(summary_file.read_text())
    table = markdown(results, args.seeds)
    print(table)
    if args.archive is not None:
        args.archive.mkdir(parents=True, exist_ok=True)
        (args.archive / "table.md").write_text(table + "\n")
        for method, runs in results.items():
            for seed in runs:
                src = args.out / f"{method}_s{seed}" / "summary.json"
                shutil.copy(src, args.archive / f"{method}_s{seed}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
