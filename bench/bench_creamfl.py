"""CreamFL benchmark: the server model of CreamFL (image-only, text-only and image-text clients of their own, smaller
architectures) against the same server model trained on the public split alone and against FedAvg over the
image-text sites only (homogeneous, the server's architecture); ablations without the inter- / intra-modal
regularisers; bytes per round; wall time per run.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_creamfl.py [--plan v3] [--seeds 0 1 2] [--out runs/bench_creamfl]
      [--archive docs/results/creamfl]   (`--tabulate` only re-prints the table of finished runs)

Plans: ``v2`` (= v1's settings, preset ``creambench``: 6 rounds x 8 steps, the client architectures of v1/v2 pinned,
128 public samples per round), ``v3`` (preset ``creambench3``: 12 rounds x 16 steps, the current default client
architectures, the default 256 public samples per round), ``v4`` (v3 with 64 client regulariser steps per round,
``reg_steps``, instead of one pass of 4) and ``v5`` (v4 with the regulariser at the private pass's scheduled lr,
``reg_lr: schedule``, instead of the base lr every round).

Settings, controls, endpoints and the target are in docs/benchmarks.md ("CreamFL benchmark"), written before any
result was looked at. Every run is evaluated by the same protocol (``evaluate_global_model``: the saved server /
global dual encoder on the held-out pooled test split of the five sites). Federated runs go through
``run_federated(env="inprocess")``; the public-only server runs the CreamFL strategy's own public pass alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_feddra import _cell, archive  # noqa: E402
from bench_feddra_v3 import paired  # noqa: E402

ROLE_MIX = "image:2,text:1,image_text:2"  # sites 1-2 image-only, 3 text-only, 4-5 image-text
IMAGE_TEXT_SITES = ["site-4", "site-5"]
_TINY_TEXT = {"text_encoder": "tiny_bert", "text_kwargs": {"num_layers": 1, "hidden_size": 32, "num_heads": 2}}
V1_CLIENTS = {  # the default client architectures when v1 and v2 ran (commit 9081f0a), pinned to reproduce them
    "image": {"options": {"model": {"image_encoder": "cnn", "image_kwargs": {"widths": [16, 32, 64, 96]},
                                    **_TINY_TEXT, "frozen": []}}},
    "image_text": {"options": {"model": {"image_encoder": "vit_tiny", "image_kwargs": {}, **_TINY_TEXT,
                                         "frozen": []}}},
}  # fmt: skip
PLANS: dict[str, dict] = {
    "v2": {"config": "creambench", "public_samples": 128, "role_settings": V1_CLIENTS, "reg_lr": "base"},
    "v3": {"config": "creambench3", "public_samples": None, "role_settings": None, "reg_lr": "base"},
    "v4": {"config": "creambench3", "public_samples": None, "role_settings": None, "reg_steps": 64,  # pilot rule
           "reg_lr": "base"},
    "v5": {"config": "creambench3", "public_samples": None, "role_settings": None, "reg_steps": 64,
           "reg_lr": "schedule"},
}  # fmt: skip
"""Settings per plan (docs/benchmarks.md): the preset, public samples per round (None: the method default), the
client architectures (None: the defaults of ``methods/creamfl/models.py``), the clients' regulariser steps per
round (absent: the method default, one pass over the round's public subset) and the regulariser's lr (``base``:
``train.lr`` every round, as v1-v4 ran; ``schedule``: the private pass's scheduled lr, the default since v5)."""
LN_BANK = float(np.log(256))  # chance level of one inter-modal term against the default bank of 256 global reps
RUNS: dict[str, dict] = {
    "public_only": {"public_only": True},
    "fedavg_it": {"method": "fedavg", "data_sites": IMAGE_TEXT_SITES},
    "creamfl": {"method": "creamfl", "args": {}},
    "creamfl_no_inter": {"method": "creamfl", "args": {"regularisers": "intra"}},
    "creamfl_no_intra": {"method": "creamfl", "args": {"regularisers": "inter"}},
}
RECALLS = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
METRICS = [*RECALLS, "rsum", "zero_shot_pooled"]
COMPARED = [("creamfl", "public_only"), ("creamfl", "fedavg_it"), ("creamfl", "creamfl_no_inter"),
            ("creamfl", "creamfl_no_intra")]  # fmt: skip
TARGET = ["i2t_R@5", "t2i_R@5"]


def public_only(cfg, run_dir: Path, data_dir: Path, rounds: int, log) -> None:
    """The CreamFL server alone: ``rounds`` public passes, no clients; saved and evaluated like every run."""
    import torch

    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.experiments.federated_eval import RunEvaluation, evaluate_global_model
    from flare_vlp.experiments.run_folder import RunFolder
    from flare_vlp.methods.creamfl.strategy import CreamFLStrategy
    from flare_vlp.methods.registry import method_config
    from flare_vlp.methods.strategy import ServerContext

    t0 = time.perf_counter()
    run = RunFolder(run_dir)
    try:
        settings = method_config("creamfl", {})
        strategy = CreamFLStrategy(settings)
        strategy.initialize(ServerContext(cfg, rounds, 1, run.log, data_dir=str(data_dir)))
        for rnd in range(rounds):
            run.log("round", round=rnd, server_loss=strategy.train_public(rnd))
        run.save_model("global", {k: torch.from_numpy(v) for k, v in strategy.global_weights().items()})
        seconds = time.perf_counter() - t0
        manifest = read_manifest(data_dir / "manifest.jsonl")
        result = evaluate_global_model(RunEvaluation(cfg, manifest, run_dir, "public_only", settings, {}, log))
        run.write_summary("public_only", "server", result.summary, **result.extra, seconds_federated=round(seconds, 1))
    finally:
        run.close()


def run_one(name: str, seed: int, out: Path, log, plan: str = "v3", reg_steps: int | None = None) -> dict:
    """Run (or reuse) one arm at one seed of ``plan``; returns its ``summary.json`` plus the wall seconds."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import default_data_dir, prepare_manifest
    from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

    spec, run_dir = RUNS[name], out / f"seed-{seed}" / name
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    overrides = {"seed": seed, "model": {"image_kwargs": {"cache_dir": str(out / "feature_cache")}}}
    settings = PLANS[plan]
    cfg = load_config(settings["config"], overrides)
    data_dir = default_data_dir(cfg, out)
    prepare_manifest(cfg, data_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if spec.get("public_only"):
        public_only(cfg, run_dir, data_dir, cfg.fl["rounds"], log)
    else:
        creamfl = spec["method"] == "creamfl"
        args = dict(spec.get("args") or {})
        if creamfl and settings["public_samples"] is not None:
            args["public_samples"] = settings["public_samples"]
        steps = reg_steps if reg_steps is not None else settings.get("reg_steps")
        if creamfl and steps is not None:
            args["reg_steps"] = steps
        if creamfl:
            args["reg_lr"] = settings["reg_lr"]
        data = DataSource(data_dir=str(data_dir), data_sites=spec.get("data_sites"))
        run = RunSpec(spec["method"], method_settings=args, config=settings["config"], config_overrides=overrides,
                      num_rounds=cfg.fl["rounds"], local_steps=cfg.fl["local_steps"], data=data,
                      role_mix=ROLE_MIX if creamfl else None,
                      role_settings=settings["role_settings"] if creamfl else {})  # fmt: skip
        run_federated(run, run_dir, env="inprocess", overwrite=True, echo=log)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"== {name} seed {seed}: {summary['wall_seconds']:.0f} s; " + _fmt(with_rsum(summary["summary"])))
    return summary


def with_rsum(summary: dict) -> dict:
    """``rsum`` = i2t R@1+R@5+R@10 + t2i R@1+R@5+R@10 on the one pooled test split (range 0-6)."""
    return {**summary, "rsum": float(sum(summary[m] for m in RECALLS))}


def _fmt(summary: dict) -> str:
    return ", ".join(f"{m} {summary[m]:.3f}" for m in METRICS if summary.get(m) is not None)


def bytes_per_round(out: Path, seed: int, config: str) -> dict:
    """Per site and direction per round: CreamFL's representations vs FedAvg's full exchanged model."""
    info = {}
    events = out / f"seed-{seed}" / "creamfl" / "metrics.jsonl"
    if events.is_file():
        rounds = [json.loads(x) for x in events.read_text().splitlines() if '"event": "round"' in x]
        if rounds:
            r = rounds[0]
            info["creamfl_up_per_site_mean"] = r["bytes_up"] / len(r["sites"])
            info["creamfl_down_per_site"] = r["bytes_down"] / len(r["sites"])
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model
    from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys

    cfg = load_config(config, {"seed": seed})  # what a FedAvg site sends (and gets) of the server's architecture
    model = build_model(cfg.model, seed=seed)
    state = model.state_dict()
    keys = exchanged_keys(model, DEFAULT_GROUPS, cfg.model.frozen)
    info["fedavg_model_per_site_each_way"] = sum(state[k].numel() * state[k].element_size() for k in keys)
    return info


def client_metric(out: Path, seeds: list[int], key: str = "train_loss") -> dict[str, tuple[float, float, int]]:
    """Per role, a CreamFL client metric (``train_loss``: the private task loss; ``reg_inter`` / ``reg_intra``: the
    regularisers, mean over the round's public pass) in the first and the last round (mean over sites and seeds) and
    the number of site-runs: whether the clients learned what they ensemble (``ln 64`` = 4.159 is the image-text
    plateau, 0.693 a zero-logit BCE, ``ln 256`` = 5.545 an inter term at chance)."""
    first: dict[str, list[float]] = {}
    last: dict[str, list[float]] = {}
    for seed in seeds:
        events = out / f"seed-{seed}" / "creamfl" / "metrics.jsonl"
        if not events.is_file():
            continue
        rows = [json.loads(x) for x in events.read_text().splitlines() if '"event": "site"' in x]
        rows = [r for r in rows if r.get("task") == "train" and "role" in r and key in r]
        if not rows:
            continue
        top = max(r["round"] for r in rows)
        for r in rows:
            if r["round"] in (0, top):
                (first if r["round"] == 0 else last).setdefault(r["role"], []).append(r[key])
    return {role: (float(np.mean(first[role])), float(np.mean(last.get(role, [np.nan]))), len(first[role]))
            for role in sorted(first)}  # fmt: skip


def substrate_check(out: Path, seeds: list[int]) -> list[str]:
    """The plan's substrate check (docs/benchmarks.md, v3 (a) and v4 (b)), read before the target."""
    loss, inter = client_metric(out, seeds), client_metric(out, seeds, "reg_inter")
    verdicts = []
    if "image_text" in loss:
        v = loss["image_text"][1]
        verdicts.append(f"(a) image_text last-round loss {v:.3f} < 3.86: {'pass' if v < 3.86 else 'FAIL'}")
    for role in ("image", "text"):
        if role in loss:
            a, b, _ = loss[role]
            verdicts.append(f"(a) {role} BCE drop {a - b:.3f} >= 0.05: {'pass' if a - b >= 0.05 else 'FAIL'}")
    for role, (_, last, _) in inter.items():
        bound = (2 if role == "image_text" else 1) * (LN_BANK - 0.3)
        verdict = "pass" if last < bound else "FAIL"
        verdicts.append(f"(b) {role} last-round reg_inter {last:.3f} < {bound:.3f}: {verdict}")
    return verdicts


def markdown(results: dict, seeds: list[int], out: Path, plan: str = "v3") -> str:
    config = PLANS[plan]["config"]
    lines = [
        f"Plan {plan}, config `{config}`, env `inprocess`, seeds {seeds}; mean ± sample std over seeds; "
        "n = seeds finished.",
        "",
    ]
    lines += ["| run | n | " + " | ".join(METRICS) + " | wall s |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    for name, by_seed in results.items():
        if not by_seed:
            continue
        cells = []
        for m in METRICS:
            v = np.array([with_rsum(s["summary"])[m] for s in by_seed.values()])
            cells.append(_cell(v.mean(), v.std(ddof=1) if v.size > 1 else float("nan")))
        wall = np.mean([s.get("wall_seconds", float("nan")) for s in by_seed.values()])
        lines.append(f"| {name} | {len(by_seed)} | " + " | ".join(cells) + f" | {wall:.0f} |")
    flat = {n: {s: with_rsum(v["summary"]) for s, v in by_seed.items()} for n, by_seed in results.items()}
    anyrun = next((v for by_seed in flat.values() for v in by_seed.values()), None)
    if anyrun is not None:
        levels = ", ".join(f"R@{k} {anyrun[f'chance_R@{k}']:.3f}" for k in (1, 5, 10))
        lines += ["", f"Chance level of a random ranking under the `labels` hit rule (seed {min(seeds)}): {levels}."]
    rng = np.random.default_rng(0)
    shown = ["i2t_R@5", "t2i_R@5", "i2t_R@1", "t2i_R@1", "rsum", "zero_shot_pooled"]
    lines += ["", "Paired differences per seed (mean [bootstrap 95% CI over seeds]):", ""]
    lines += ["| a − b | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for a, b in COMPARED:
        cells = []
        for m in shown:
            p = paired(flat, a, b, m, rng)
            cells.append(f"{p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]" if p else "-")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    verdict = []
    for b in ("public_only", "fedavg_it"):
        for m in TARGET:
            p = paired(flat, "creamfl", b, m, np.random.default_rng(0))
            if p:
                verdict.append(f"creamfl − {b} on {m}: {p['mean']:+.3f} ({'ahead' if p['mean'] > 0 else 'not ahead'})")
    if verdict:
        lines += ["", "Target (CreamFL's server ahead of both on R@5 in both directions): " + "; ".join(verdict)]
    for key, what in (("train_loss", "private task loss"), ("reg_inter", "inter-modal regulariser"),
                      ("reg_intra", "intra-modal regulariser"), ("reg_lr", "regulariser lr")):  # fmt: skip
        values = client_metric(out, seeds, key)
        if values:
            fmt = ".3g" if key == "reg_lr" else ".3f"  # an lr of 1e-3 -> 5e-5 needs significant digits
            shown = "; ".join(f"{role} {a:{fmt}} -> {b:{fmt}} (n = {n})" for role, (a, b, n) in values.items())
            lines += ["", f"CreamFL clients' {what}, first -> last round (mean over sites and seeds): {shown}"]
    checks = substrate_check(out, seeds)
    if checks:
        lines += ["", "Substrate check: " + "; ".join(checks)]
    b = bytes_per_round(out, seeds[0], config)
    if b:
        lines += ["", "Bytes per round, per site and direction: " + ", ".join(f"{k} {v:,.0f}" for k, v in b.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", choices=list(PLANS), default="v3", help="benchmark plan (docs/benchmarks.md)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--out", type=Path, default=Path("runs/bench_creamfl"))
    p.add_argument("--archive", type=Path, default=None, help="copy the finished runs' summaries here")
    p.add_argument("--tabulate", action="store_true", help="only re-print the table of finished runs")
    p.add_argument("--reg-steps", type=int, default=None, help="override the plan's client regulariser steps (pilot)")
    args = p.parse_args(argv)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    log = print
    results: dict[str, dict[int, dict]] = {n: {} for n in args.runs}
    for seed in args.seeds:
        for name in args.runs:
            done = out / f"seed-{seed}" / name / "summary.json"
            if args.tabulate:
                if done.is_file():
                    results[name][seed] = json.loads(done.read_text())
                continue
            results[name][seed] = run_one(name, seed, out, log, args.plan, args.reg_steps)
            (out / "table.md").write_text(markdown(results, args.seeds, out, args.plan))
    table = markdown(results, args.seeds, out, args.plan)
    (out / "table.md").write_text(table)
    print(table)
    if args.archive:
        archive(out, args.archive, args.runs, args.seeds)
        (args.archive / "table.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
