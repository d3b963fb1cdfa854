"""`SynthSummary`: what a SynthCXR run produced, per site, as text for people and as a dict for ``synthcxr.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_vlp.data.manifest import SPLITS, SYNTHCXR_FINDINGS
from flare_vlp.data.synthetic.config import SCENARIOS, SynthConfig
from flare_vlp.data.synthetic.sites import SiteProfile

__all__ = ["SynthSummary", "summarize"]

_ABBR = {"opacity": "opac", "nodule": "nod", "effusion": "eff", "cardiomegaly": "cm", "pneumothorax": "ptx"}


@dataclass(frozen=True)
class SynthSummary:
    """Counts, prevalence, style and shift per site, plus timing.

    Args:
        out_dir: the data set folder.
        scenario: the scenario name.
        n_total: samples written.
        seconds: wall time of the generation.
        workers: rendering processes used.
        sites: one dict per site: ``name``, ``n`` (split -> count), ``prevalence`` (finding -> share in train+val,
            or in the site's only split), ``dropped`` (findings left out of reports), ``style``, ``shift``.
    """

    out_dir: str
    scenario: str
    n_total: int
    seconds: float
    workers: int
    sites: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.n_total / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "scenario": self.scenario,
            "n_total": self.n_total,
            "seconds": round(self.seconds, 3),
            "samples_per_s": round(self.samples_per_s, 1),
            "workers": self.workers,
            "sites": self.sites,
        }

    def to_text(self) -> str:
        """A table a person can read in a terminal."""
        head = (
            f"{'site':<8} " + " ".join(f"{s:>6}" for s in SPLITS) + "  " + " ".join(f"{a:>5}" for a in _ABBR.values())
        )
        lines = [
            f"SynthCXR: {self.n_total} samples in {self.seconds:.1f} s ({self.samples_per_s:.0f}/s, "
            f"{self.workers} workers) -> {self.out_dir}",
            f"scenario '{self.scenario}': {SCENARIOS.get(self.scenario, '')}",
            "prevalence = share of positives in train+val (test-only / public sites: in their split)",
            head,
        ]
        for s in self.sites:
            counts = " ".join(f"{s['n'].get(sp, 0):>6}" for sp in SPLITS)
            prev = " ".join(f"{s['prevalence'][f]:>5.2f}" for f in SYNTHCXR_FINDINGS)
            lines.append(f"{s['name']:<8} {counts}  {prev}")
        lines.append("per site: report style | acquisition")
        for s in self.sites:
            dropped = f" dropped={s['dropped']}" if s["dropped"] else ""
            lines.append(f"  {s['name']:<8} {s['style']}{dropped} | {s['shift']}")
        return "\n".join(lines)


def summarize(
    cfg: SynthConfig, sites: list[SiteProfile], rows: list[dict], *, seconds: float, workers: int, out_dir: Path
) -> SynthSummary:
    """Build the summary from the rendered rows (ground truth, not the expected mixes)."""
    per_site = []
    for site in sites:
        mine = [r for r in rows if r["site"] == site.name]
        pool = [r for r in mine if r["split"] in ("train", "val")] or mine
        n = {sp: sum(r["split"] == sp for r in mine) for sp in SPLITS}
        prevalence = {f: round(sum(r["labels"][f] for r in pool) / max(1, len(pool)), 4) for f in SYNTHCXR_FINDINGS}
        per_site.append(
            {
                "name": site.name,
                "n": n,
                "prevalence": prevalence,
                "dropped": sum(len(r["dropped"]) for r in mine),
                "style": site.style.describe(),
                "shift": site.shift.describe(),
            }
        )
    return SynthSummary(str(out_dir), cfg.scenario, len(rows), seconds, workers, per_site)
