"""FedDRA benchmark v3: a substrate that learns, a fixed local-step budget (drift), an IID control on the SAME rows
and test sets, two unseen sites, a pre-registered gate, and paired differences with bootstrap intervals.

Run:  .venv/bin/python bench/bench_feddra_v3.py [--seeds 0 1 2 3 4] [--env inprocess|sim] [--device cpu|cuda]
      [--out runs/bench_feddra_v3] [--archive docs/results/feddra_v3]   (`--tabulate` only re-prints)
      .venv/bin/python bench/bench_feddra_v3.py --seeds 0 --runs fedavg feddra --env sim --out runs/bench_v3_sim
            (the FLARE-simulator agreement check; `--compare runs/bench_feddra_v3` prints both side by side)

Settings, controls, endpoints and the gate are in docs/benchmarks.md ("FedDRA benchmark v3"), written before any
result was looked at. Every run is a real one, evaluated by the same protocol: baselines through
``flare_vlp.experiments.baselines``; federated methods through ``flare_vlp.recipes.run.run_federated`` with the
platform's in-process runner (``--env inprocess``, the seed grid) or FLARE's simulator (``--env sim``). Runs with a
``summary.json`` are reused (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_feddra import _cell, _merge, archive, finding_table, plot_lambdas  # noqa: E402

CONFIG = "fedbench3"
DRO = {"rho": 0.1, "eta": 0.5, "divergence": "chi2", "center": "uniform", "signal": "loss", "anchor_weight": 1.0,
       "signal_batches": "fixed", "dro_batches": 8, "dro_batch_size": 16}  # fmt: skip
RUNS: dict[str, dict] = {
    "centralized": {"baseline": "centralized"},
    "local": {"baseline": "local"},
    "fedavg": {"method": "fedavg"},
    "fedavg_uniform": {"method": "fedavg", "args": {"weighting": "uniform"}},
    "fedprox": {"method": "fedprox", "args": {"mu": 0.01}},
    "fedaid": {"method": "fedaid", "args": DRO},  # = the "no two-stage" ablation of FedDRA
    "feddra": {"method": "feddra", "args": {**DRO, "stage1_steps": 3}},
    "feddra_no_anchor": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "anchor_weight": 0.0}},
    "feddra_rho0": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "rho": 0.0}},
    "fedavg_iid": {"method": "fedavg", "iid": True},  # the SAME training rows dealt at random, the SAME test sets
}
GATE_ENDPOINT = "zero_shot_worst_site"
PRIMARY = ["zero_shot_worst_site", "zero_shot_unseen_inside", "linear_probe_pooled"]
SECONDARY = ["zero_shot_pooled", "zero_shot_mean_site", "zero_shot_unseen", "i2t_R@5", "t2i_R@5"]
METRICS = PRIMARY + SECONDARY
COMPARED = ["fedaid", "feddra", "feddra_no_anchor", "feddra_rho0", "fedprox", "fedavg_uniform", "centralized", "local"]
BOOTSTRAP = 10_000


def iid_manifest(cfg, data_dir: Path, dest: Path) -> Path:
    """The IID control's manifest: the generated rows with train/val sites permuted (``deal_iid``), tests untouched."""
    from flare_vlp.data.manifest import write_manifest
    from flare_vlp.data.partition import deal_iid
    from flare_vlp.experiments.builders import prepare_manifest

    if not dest.is_file():
        write_manifest(deal_iid(prepare_manifest(cfg, data_dir), seed=cfg.seed).records, dest, relative=False)
    return dest


def run_one(name: str, seed: int, out: Path, env: str, device: str, log) -> dict:
    """Run (or reuse) one method at one seed; returns its ``summary.json``."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.builders import default_data_dir
    from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

    spec, run_dir = RUNS[name], out / f"seed-{seed}" / name
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    overrides = {"seed": seed, "model": {"image_kwargs": {"cache_dir": str(out / "feature_cache")}}}
    if device != "cpu":  # fp32 everywhere, so a GPU grid computes what the CPU runs compute
        overrides["train"] = {"amp": "off"}
    cfg = load_config(CONFIG, overrides)
    data_dir = default_data_dir(cfg, out)
    if spec.get("iid"):
        manifest = iid_manifest(cfg, data_dir, out / f"seed-{seed}" / "iid_manifest.jsonl")
        overrides = _merge(overrides, {"data": {"manifest": str(manifest)}})
        cfg = load_config(CONFIG, overrides)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if "baseline" in spec:
        run_baseline(cfg, run_dir, spec["baseline"], data_dir=data_dir, device=device, overwrite=True, echo=log)
    else:
        run = RunSpec(spec["method"], method_settings=spec.get("args") or {}, config=CONFIG, config_overrides=overrides,
                      num_rounds=cfg.fl["rounds"], local_steps=cfg.fl["local_steps"], device=device,
                      data=DataSource(data_dir=str(data_dir)))  # fmt: skip
        run_federated(run, run_dir, env=env, overwrite=True, echo=log)
    summary = json.loads((run_dir / "summary.json").read_text())
    log(f"== {name} seed {seed}: {time.perf_counter() - t0:.0f} s; " + _fmt(summary["summary"]))
    return summary


def _fmt(summary: dict) -> str:
    return ", ".join(f"{m} {summary[m]:.3f}" for m in METRICS if summary.get(m) is not None)


def baseline_convergence(run_dir: Path, windows: int) -> dict:
    """A baseline's criterion on its logged training loss cut into ``windows`` chunks (worst site for local-only)."""
    from flare_vlp.experiments.convergence import convergence, train_loss_by_window

    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    by_site: dict[str, list[float]] = {}
    for e in events:
        if e.get("event") == "train" and e.get("loss") is not None:
            by_site.setdefault(e.get("site", "pooled"), []).append(float(e["loss"]))
    checks = [convergence(train_loss_by_window(v, windows), source=f"train loss ({s})") for s, v in by_site.items()]
    return max(checks, key=lambda c: c["relative_change"]) if checks else convergence([], source="train loss")


def convergence_of(summary: dict, run_dir: Path, rounds: int) -> dict:
    if "convergence" in summary:
        return summary["convergence"]
    return baseline_convergence(run_dir, rounds)


def paired(results: dict, a: str, b: str, metric: str, rng: np.random.Generator) -> dict | None:
    """``a - b`` per seed on ``metric``: mean, sample std and a percentile bootstrap 95% interval over seeds."""
    seeds = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    diffs = np.array([results[a][s][metric] - results[b][s][metric] for s in seeds if metric in results[a][s]])
    if diffs.size == 0:
        return None
    boot = diffs[rng.integers(0, diffs.size, size=(BOOTSTRAP, diffs.size))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    sd = float(diffs.std(ddof=1)) if diffs.size > 1 else float("nan")
    return {"n": int(diffs.size), "mean": float(diffs.mean()), "std": sd, "ci95": [float(lo), float(hi)]}


def gate(results: dict) -> dict | None:
    """Heterogeneity must hurt FedAvg: mean(IID - heterogeneous) >= 3 x the seed std of heterogeneous FedAvg."""
    if not results.get("fedavg_iid") or not results.get("fedavg"):
        return None
    d = paired(results, "fedavg_iid", "fedavg", GATE_ENDPOINT, np.random.default_rng(0))
    het = np.array([s[GATE_ENDPOINT] for s in results["fedavg"].values()])
    sd = float(het.std(ddof=1)) if het.size > 1 else float("nan")
    return {"endpoint": GATE_ENDPOINT, "diff": d, "fedavg_seed_std": sd, "threshold": 3 * sd,
            "passed": bool(d and np.isfinite(sd) and d["mean"] >= 3 * sd)}  # fmt: skip


def markdown(results: dict, meta: dict, seeds: list[int], env: str) -> str:
    lines = [f"Config `{CONFIG}`, env `{env}`, seeds {seeds}; mean ± sample std over seeds.", ""]
    lines += [
        "| run | n | " + " | ".join(METRICS) + " | converged | wall s |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    for name, by_seed in results.items():
        cells = []
        for m in METRICS:
            v = np.array([s[m] for s in by_seed.values() if s.get(m) is not None])
            cells.append(_cell(v.mean(), v.std(ddof=1) if v.size > 1 else float("nan")) if v.size else "-")
        conv = [meta[name][s]["convergence"]["met"] for s in by_seed]
        wall = np.mean([meta[name][s]["seconds"] for s in by_seed])
        lines.append(f"| {name} | {len(by_seed)} | " + " | ".join(cells) + f" | {sum(conv)}/{len(conv)} | {wall:.0f} |")
    g = gate(results)
    if g:
        d = g["diff"]
        lines += ["", f"Gate ({g['endpoint']}): IID FedAvg − FedAvg = {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} to "
                  f"{d['ci95'][1]:+.3f}, n={d['n']}) vs 3 × seed std {g['threshold']:.3f}: "
                  f"**{'PASSED' if g['passed'] else 'FAILED'}**"]  # fmt: skip
    rng = np.random.default_rng(0)
    lines += ["", "Paired differences to FedAvg (mean [bootstrap 95% CI over seeds]):", ""]
    lines += ["| run − fedavg | " + " | ".join(METRICS[:6]) + " |", "|---|" + "---|" * 6]
    for name in COMPARED:
        cells = []
        for m in METRICS[:6]:
            p = paired(results, name, "fedavg", m, rng)
            cells.append(f"{p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]" if p else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--env", choices=["inprocess", "sim"], default="inprocess")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/bench_feddra_v3"))
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--tabulate", action="store_true", help="only tabulate finished runs")
    p.add_argument("--archive", type=Path, default=None, help="copy summaries and round logs of finished runs here")
    p.add_argument("--compare", type=Path, default=None, help="another --out to print side by side (agreement check)")
    args = p.parse_args(argv)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    log_file = None if args.tabulate else open(out / "bench.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(msg: str) -> None:
        if log_file is not None:
            log_file.write(msg + "\n")
            log_file.flush()
        if msg.startswith("=="):
            print(msg, flush=True)

    from flare_vlp.config import load_config

    rounds = load_config(CONFIG).fl["rounds"]
    results: dict[str, dict[int, dict]] = {n: {} for n in args.runs}
    meta: dict[str, dict[int, dict]] = {n: {} for n in args.runs}
    t0 = time.perf_counter()
    try:
        for seed in args.seeds:  # seed-major: a cut-short benchmark still has every method at the first seeds
            for name in args.runs:
                run_dir = out / f"seed-{seed}" / name
                if args.fresh and not args.tabulate:
                    (run_dir / "summary.json").unlink(missing_ok=True)
                if args.tabulate and not (run_dir / "summary.json").is_file():
                    continue
                full = run_one(name, seed, out, args.env, args.device, log)
                results[name][seed] = full["summary"]
                seconds = full.get("seconds") or full.get("seconds_federated") or float("nan")
                meta[name][seed] = {"convergence": convergence_of(full, run_dir, rounds), "seconds": seconds}
    finally:
        results = {k: v for k, v in results.items() if v}
        md = markdown(results, meta, args.seeds, args.env)
        md += "\n" + finding_table(out, list(results), args.seeds)
        (out / "results.md").write_text(md)
        blob = {"config": CONFIG, "env": args.env, "runs": results, "meta": meta, "gate": gate(results)}
        (out / "results.json").write_text(json.dumps(blob, indent=2) + "\n")
        plot_lambdas(out, [n for n in results if n.startswith("fed")], args.seeds)
        if args.archive is not None:
            print(f"archived {len(archive(out, args.archive.absolute(), list(results), args.seeds))} runs")
        print(md)
        if args.compare is not None:
            other = json.loads((args.compare.absolute() / "results.json").read_text())["runs"]
            print(f"agreement with {args.compare}:")
            for name, by_seed in results.items():
                for seed, summary in by_seed.items():
                    theirs = other.get(name, {}).get(str(seed))
                    if theirs:
                        pairs = ", ".join(f"{m} {summary[m]:.3f} vs {theirs[m]:.3f}" for m in METRICS[:4])
                        print(f"  {name} seed {seed}: {pairs}")
        print(f"total {time.perf_counter() - t0:.0f} s; results in {out}")
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
