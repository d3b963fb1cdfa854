"""`generate_synthcxr`: render every sample of every site to PNG and write the manifest, atomically.

Determinism: each sample draws from ``default_rng(SeedSequence([seed, _SAMPLE_STREAM, site_code, split, index]))``,
so its image and report depend only on the config and its own coordinates, never on the worker that rendered it or
on the order of completion. Same config -> byte-identical manifest and PNGs for any number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from flare_vlp.data.manifest import Record, write_manifest
from flare_vlp.data.synthetic.acquisition import apply_acquisition, film_to_display
from flare_vlp.data.synthetic.anatomy import make_grid, render_anatomy, sample_anatomy
from flare_vlp.data.synthetic.config import SynthConfig
from flare_vlp.data.synthetic.findings import render_findings, sample_findings
from flare_vlp.data.synthetic.reports import write_report
from flare_vlp.data.synthetic.sites import BALANCED_MIX, SiteProfile, build_sites
from flare_vlp.data.synthetic.summary import SynthSummary, summarize
from flare_vlp.utils.io import atomic_output_dir

__all__ = ["generate_synthcxr", "render_sample", "sample_plan", "SynthSample"]

_SAMPLE_STREAM = 13
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "public": 3}
_CHUNK = 48

SynthSample = tuple[np.ndarray, dict[str, int], str, list[str]]
"""(uint8 image HxW, labels, report, findings left out of the report)."""


def render_sample(cfg: SynthConfig, site: SiteProfile, split: str, index: int) -> SynthSample:
    """Render one sample from its own seed: labels -> attributes -> anatomy -> findings -> acquisition -> report."""
    rng = np.random.default_rng(
        np.random.SeedSequence([cfg.seed, _SAMPLE_STREAM, site.code, _SPLIT_CODE[split], index])
    )
    mix = np.asarray(BALANCED_MIX if split == "test" else site.mix)
    labels, findings = sample_findings(rng, mix, cfg.cooccurrence)
    anat = sample_anatomy(rng, ap_rate=site.shift.ap_rate, jitter=site.shift.jitter)
    grid = make_grid(cfg.render_size, anat, cfg.supersample)
    ctr = next((f.value for f in findings if f.name == "cardiomegaly"), None)
    layers = render_anatomy(anat, grid, rng, ctr=ctr)
    render_findings(layers, grid, anat, findings, rng)
    img = film_to_display(layers.density())
    s = cfg.supersample
    img = img.reshape(cfg.size, s, cfg.size, s).mean(axis=(1, 3))
    img = apply_acquisition(img, site.shift, rng)
    report, dropped = write_report(findings, site.style, rng)
    return np.round(img * 255.0).astype(np.uint8), labels, report, dropped


def sample_plan(sites: list[SiteProfile]) -> list[tuple[int, str, int]]:
    """Every (site position, split, index) to render, in manifest order."""
    plan = []
    for k, site in enumerate(sites):
        for split, n in (
            ("train", site.n_train),
            ("val", site.n_val),
            ("test", site.n_test),
            ("public", site.n_public),
        ):
            plan.extend((k, split, i) for i in range(n))
    return plan


def _sample_id(site: SiteProfile, split: str, index: int) -> str:
    return f"{site.name}-{split}-{index:05d}"


def _render_chunk(args: tuple[SynthConfig, list[SiteProfile], list[tuple[int, str, int]], str]) -> list[dict]:
    cfg, sites, jobs, root = args
    rows = []
    for k, split, index in jobs:
        site = sites[k]
        img, labels, report, dropped = render_sample(cfg, site, split, index)
        sid = _sample_id(site, split, index)
        rel = f"images/{site.name}/{sid}.png"  # relative to the manifest, so the folder can be moved
        Image.fromarray(img).save(os.path.join(root, rel), format="PNG", optimize=False, compress_level=6)
        rows.append({"id": sid, "image": rel, "report": report, "labels": labels, "site": site.name, "split": split})
        rows[-1]["dropped"] = dropped
    return rows


def _run(tasks: list, workers: int, progress: Callable[[int, int], None] | None, total: int) -> list[dict]:
    rows: list[dict] = []

    def consume(chunk_rows: list[dict]) -> None:
        rows.extend(chunk_rows)
        if progress is not None:
            progress(len(rows), total)

    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            consume(_render_chunk(t))
        return rows
    # fork where the platform has it: spawn would re-import the caller's __main__ (breaking unguarded scripts) and
    # costs a second per worker; the children only run numpy + PIL, never torch, so inherited threads are harmless
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(workers, len(tasks))) as pool:
        for chunk_rows in pool.imap(_render_chunk, tasks):
            consume(chunk_rows)
    return rows


def generate_synthcxr(
    cfg: SynthConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> SynthSummary:
    """Generate a SynthCXR data set into ``out_dir``.

    Writes ``manifest.jsonl`` (image paths relative to it), ``images/<site>/<id>.png`` (8-bit gray) and
    ``synthcxr.json`` (the resolved config, the site profiles and the summary). The folder appears only when
    everything succeeded.

    Args:
        cfg: the data set configuration.
        out_dir: output folder; its parent must exist.
        workers: rendering processes (default ``os.cpu_count()``); the output does not depend on it.
        progress: called as ``progress(n_done, n_total)`` after each chunk of samples.
        overwrite: replace an existing non-empty ``out_dir``.

    Raises:
        OutputPathError: missing parent folder, or a non-empty ``out_dir`` without ``overwrite``.

    Example:
        >>> summary = generate_synthcxr(SynthConfig(sites=3, samples=600), "data/synthcxr")  # doctest: +SKIP
    """
    workers = cfg.default_workers if workers is None else max(1, int(workers))
    start = time.perf_counter()
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        sites = build_sites(cfg)
        for site in sites:
            (tmp / "images" / site.name).mkdir(parents=True, exist_ok=True)
        plan = sample_plan(sites)
        tasks = [(cfg, sites, plan[i : i + _CHUNK], str(tmp)) for i in range(0, len(plan), _CHUNK)]
        rows = _run(tasks, workers, progress, len(plan))
        records = [Record(**{k: v for k, v in r.items() if k != "dropped"}) for r in rows]
        write_manifest(records, tmp / "manifest.jsonl", relative=True)
        seconds = time.perf_counter() - start
        summary = summarize(cfg, sites, rows, seconds=seconds, workers=workers, out_dir=Path(out_dir).absolute())
        meta = {"config": cfg.to_dict(), "sites": [s.to_dict() for s in sites], "summary": summary.to_dict()}
        (tmp / "synthcxr.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return summary
