"""FedDRA / FedAID against the baselines on heterogeneous SynthCXR, several seeds, with ablations.

Run:  .venv/bin/python bench/bench_feddra.py [--config fedbench] [--seeds 0 1 2] [--out runs/bench_feddra]
      [--archive docs/results/feddra_v2]   (keep the summaries in the repository; `--out <archive> --tabulate` reprints)

Every run is a real one: baselines through ``flare_vlp.experiments.baselines``, federated methods as FLARE jobs in
the simulator (``flare_vlp.recipes.run.run_federated``), all evaluated by the same protocol. Runs that already have a
``summary.json`` are reused, so an interrupted benchmark continues where it stopped (``--fresh`` reruns all).

Runs per seed (settings fixed before any result was looked at; see docs/methods.md):
  centralized, local            the two baselines (config's epochs)
  fedavg, fedprox               n_k-weighted; FedProx mu 0.01
  fedaid                        DRO (rho 0.1, eta 0.5, chi2 ball around uniform, paper's loss signal) + anchor 1.0
                                = also the "no two-stage" ablation of FedDRA
  feddra                        fedaid + two-stage rounds (stage 1: 3 deep-only steps; stage 2: one epoch)
  feddra_no_anchor              ablation: anchor weight 0
  feddra_rho0                   ablation: rho 0 (uniform weights, no DRO)
  fedavg_iid                    control: FedAvg on the IID scenario (same sizes, no heterogeneity)
  feddra_excess                 variant: DRO signal = excess loss (global-model loss minus own-update loss)
  feddra_anchor_d               variant: anchor weight 128 = embed_dim (per-sample squared distance to the anchor)
Each federated run has as many rounds as the config has epochs, one local epoch per round.
Prints mean +- std over seeds of zero-shot AUC, linear-probe AUC, retrieval R@5 (pooled / worst site / unseen site),
the share of the FedAvg -> centralized gap that FedDRA closes, and writes results.md, results.json and lambda plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from flare_vlp.experiments.report import HEADLINE

DRO = {"rho": 0.1, "eta": 0.5, "divergence": "chi2", "center": "uniform", "signal": "loss", "anchor_weight": 1.0}
RUNS: dict[str, dict] = {
    "centralized": {"baseline": "centralized"},
    "local": {"baseline": "local"},
    "fedavg": {"method": "fedavg"},
    "fedprox": {"method": "fedprox", "mu": 0.01},
    "fedaid": {"method": "fedaid", "args": DRO},
    "feddra": {"method": "feddra", "args": {**DRO, "stage1_steps": 3}},
    "feddra_no_anchor": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "anchor_weight": 0.0}},
    "feddra_rho0": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "rho": 0.0}},
    "fedavg_iid": {"method": "fedavg", "overrides": {"data": {"synth": {"scenario": "iid"}}}},
    # variant: the excess-loss DRO signal (l_k minus the loss of the site's own update), see the lessons
    "feddra_excess": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "signal": "excess"}},
    # variant: anchor weight = embed_dim (128 in fedbench), so the term is the per-sample squared distance
    # ||z - zbar||^2 (MSE averages over D too, which leaves the paper's weight 1.0 at ~1e-3 of the loss)
    "feddra_anchor_d": {"method": "feddra", "args": {**DRO, "stage1_steps": 3, "anchor_weight": 128.0}},
}
DEFAULT_RUNS = list(RUNS)
METRICS = [m for m in HEADLINE if m != "chance_R@5"]  # the report's headline; chance is a constant, not a result


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_one(name: str, seed: int, config: str, out: Path, log) -> dict:
    """Run (or reuse) one method at one seed; returns its summary."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.baselines import run_baseline
    from flare_vlp.experiments.builders import default_data_dir
    from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

    spec = RUNS[name]
    run_dir = out / f"seed-{seed}" / name
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())["summary"]
    overrides = _merge({"seed": seed}, spec.get("overrides", {}))
    cfg = load_config(config, overrides)
    data_dir = default_data_dir(cfg, out)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if "baseline" in spec:
        summary = run_baseline(cfg, run_dir, spec["baseline"], data_dir=data_dir, overwrite=True, echo=log)
        summary = summary.get("summary", summary)
    else:
        settings = {**({"mu": spec["mu"]} if "mu" in spec else {}), **(spec.get("args") or {})}
        run = RunSpec(spec["method"], method_settings=settings, config=config, config_overrides=overrides,
                      num_rounds=max(1, round(cfg.train.epochs)), data=DataSource(data_dir=str(data_dir)))  # fmt: skip
        summary = run_federated(run, run_dir, overwrite=True, echo=log)
    log(f"== {name} seed {seed}: {time.perf_counter() - t0:.0f} s; " + _fmt(summary))
    return summary


def _fmt(summary: dict) -> str:
    return ", ".join(f"{m} {summary[m]:.3f}" for m in METRICS if summary.get(m) is not None)


def aggregate(results: dict[str, dict[int, dict]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """name -> metric -> (mean, sample std, n seeds)."""
    table = {}
    for name, by_seed in results.items():
        table[name] = {}
        for metric in METRICS:
            values = [s[metric] for s in by_seed.values() if s.get(metric) is not None]
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
                table[name][metric] = (float(np.mean(values)), std, len(values))
    return table


def gap_closure(results: dict[str, dict[int, dict]], method: str = "feddra") -> dict[str, dict]:
    """Share of the FedAvg -> centralized gap ``method`` closes, and its paired per-seed difference to FedAvg."""
    out = {}
    for metric in ("zero_shot_pooled", "zero_shot_worst_site", "zero_shot_unseen"):
        seeds = sorted(
            set(results.get(method, {})) & set(results.get("fedavg", {})) & set(results.get("centralized", {}))
        )
        if not seeds:
            continue
        m = np.array([results[method][s][metric] for s in seeds])
        f = np.array([results["fedavg"][s][metric] for s in seeds])
        c = np.array([results["centralized"][s][metric] for s in seeds])
        gap = float(np.mean(c - f))
        diff = m - f
        out[metric] = {
            "seeds": seeds,
            "gap_central_minus_fedavg": gap,
            "diff_vs_fedavg_mean": float(diff.mean()),
            "diff_vs_fedavg_std": float(diff.std(ddof=1)) if len(seeds) > 1 else float("nan"),
            # a share of a gap only means something when centralized is ahead of FedAvg
            "closed_share": float(diff.mean() / gap) if gap > 0 else float("nan"),
        }
    return out


def _cell(mean: float, std: float) -> str:
    """``mean ± std``; a single seed has no spread, so just the value."""
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown(table: dict, closure: dict, config: str, seeds: list[int]) -> str:
    lines = [
        f"Config `{config}`, seeds {seeds}; mean ± sample std over seeds (n = seeds that finished).",
        "",
        "| run | n | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for name, row in table.items():
        n = max((v[2] for v in row.values()), default=0)
        cells = [_cell(*row[m][:2]) if m in row else "-" for m in METRICS]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    if closure:
        lines += ["", "| zero-shot metric | centralized − FedAvg | FedDRA − FedAvg (paired, mean ± std) | gap closed |"]
        lines.append("|---|---|---|---|")
        for metric, c in closure.items():
            lines.append(
                f"| {metric} | {c['gap_central_minus_fedavg']:+.3f} | {c['diff_vs_fedavg_mean']:+.3f} ± "
                f"{c['diff_vs_fedavg_std']:.3f} | {c['closed_share']:+.0%} |"
            )
    return "\n".join(lines) + "\n"


def finding_table(out: Path, names: list[str], seeds: list[int], group: str = "pooled") -> str:
    """Zero-shot AUC per finding on ``group`` (mean over the seeds that finished): which findings a run learned.

    The macro AUC of the headline averages the findings, so a run that learned one finding well and none of the
    others reads like one that learned all a little; this table tells them apart.
    """
    rows, findings = {}, []
    for name in names:
        per_seed = []
        for seed in seeds:
            path = out / f"seed-{seed}" / name / "summary.json"
            groups = json.loads(path.read_text()).get("eval", {}).get("groups", {}) if path.is_file() else {}
            if group in groups and "zero_shot" in groups[group]:
                per_seed.append(groups[group]["zero_shot"])
        if per_seed:
            findings = findings or [f for f in per_seed[0] if f != "macro"]
            rows[name] = ({f: float(np.nanmean([z[f] for z in per_seed])) for f in findings}, len(per_seed))
    if not rows:
        return ""
    lines = [f"Zero-shot AUC per finding, {group} (mean over seeds):", "", "| run | n | " + " | ".join(findings) + " |"]
    lines.append("|---|---|" + "---|" * len(findings))
    for name, (aucs, n) in rows.items():
        lines.append(f"| {name} | {n} | " + " | ".join(f"{aucs[f]:.3f}" for f in findings) + " |")
    return "\n".join(lines) + "\n"


def plot_lambdas(out: Path, names: list[str], seeds: list[int]) -> list[Path]:
    from flare_vlp.experiments.plots import plot_site_weights
    from flare_vlp.methods.feddra.plots import dro_trajectories

    paths = []
    for name in names:
        for seed in seeds:
            metrics = out / f"seed-{seed}" / name / "metrics.jsonl"
            lambdas = dro_trajectories(metrics)
            if lambdas:
                path = out / "plots" / f"lambda_{name}_seed{seed}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                title = f"{name}, seed {seed}: lambda per round"
                paths.append(plot_site_weights(lambdas, path, title=title, ylabel="lambda (aggregation weight)"))
    return paths


def archive(out: Path, dest: Path, names: list[str], seeds: list[int]) -> list[Path]:
    """Copy what the results table and the lambda plots need of every finished run into ``dest``, in the same
    ``seed-<k>/<name>/`` layout, so ``--out dest --tabulate`` re-prints them from a clean clone: ``summary.json``,
    ``config.yaml`` and ``metrics.jsonl`` without the per-step ``stream`` lines (rounds, sites, lambda, eval)."""
    copied = []
    for seed in seeds:
        for name in names:
            src = out / f"seed-{seed}" / name
            if not (src / "summary.json").is_file():
                continue
            run = dest / f"seed-{seed}" / name
            run.mkdir(parents=True, exist_ok=True)
            for file in ("summary.json", "config.yaml"):
                if (src / file).is_file():
                    (run / file).write_text((src / file).read_text())
            lines = (src / "metrics.jsonl").read_text().splitlines() if (src / "metrics.jsonl").is_file() else []
            kept = [line for line in lines if line.strip() and json.loads(line).get("event") != "stream"]
            (run / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
            copied.append(run)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="fedbench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
    p.add_argument("--out", type=Path, default=Path("runs/bench_feddra"))
    p.add_argument("--fresh", action="store_true", help="rerun runs that already have a summary")
    p.add_argument("--tabulate", action="store_true", help="only tabulate the runs that finished; train nothing")
    p.add_argument("--log", type=Path, default=None, help="file for the runs' progress and FLARE output")
    p.add_argument(
        "--archive", type=Path, default=None, help="also copy the finished runs' summaries and round logs here"
    )
    args = p.parse_args(argv)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for seed in args.seeds:
            for name in args.runs:
                summary = out / f"seed-{seed}" / name / "summary.json"
                summary.unlink(missing_ok=True)
    # tabulating trains nothing, so it leaves no log behind (e.g. in an archive folder)
    log_file = None if args.tabulate else open(args.log or out / "bench.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(msg: str) -> None:
        if log_file is not None:
            log_file.write(msg + "\n")
            log_file.flush()
        if msg.startswith("=="):
            print(msg, flush=True)

    t0 = time.perf_counter()
    results: dict[str, dict[int, dict]] = {name: {} for name in args.runs}
    try:
        for seed in args.seeds:  # seed-major: a cut-short benchmark still has every method at the first seeds
            for name in args.runs:
                done = out / f"seed-{seed}" / name / "summary.json"
                if args.tabulate and not done.is_file():
                    continue
                results[name][seed] = run_one(name, seed, args.config, out, log)
    finally:
        results = {k: v for k, v in results.items() if v}
        table = aggregate(results)
        closure = gap_closure(results)
        md = markdown(table, closure, args.config, args.seeds)
        md += "\n" + finding_table(out, list(results), args.seeds)
        (out / "results.md").write_text(md)
        (out / "results.json").write_text(
            json.dumps({"config": args.config, "runs": results, "table": table, "closure": closure}, indent=2) + "\n"
        )
        plots = plot_lambdas(out, [n for n in args.runs if n.startswith("fed")], args.seeds)
        if args.archive is not None:
            copied = archive(out, args.archive.absolute(), args.runs, args.seeds)
            print(f"archived {len(copied)} runs in {args.archive}")
        print(md)
        print(f"lambda plots: {[str(p) for p in plots]}")
        print(f"total {time.perf_counter() - t0:.0f} s; results in {out}")
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
