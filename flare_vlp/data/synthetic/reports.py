"""Radiology reports written from the drawn finding attributes, in one of three site styles.

Each site has a style (structured FINDINGS/IMPRESSION, narrative prose, terse with abbreviations), a vocabulary
family (which synonym it prefers), a negation rate (pertinent negatives), a hedge rate ("possible ...") and a label
noise rate: the probability that a present finding is left out of the report. The labels stay the truth, so label
noise models what a text-supervised method actually sees at a careless site.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from flare_vlp.data.manifest import SYNTHCXR_FINDINGS
from flare_vlp.data.synthetic.findings import Finding

__all__ = ["STYLES", "ReportStyle", "sample_style", "write_report"]

STYLES: tuple[str, ...] = ("structured", "narrative", "terse")

_SYN = {
    "opacity": (["opacity", "airspace opacity", "patchy opacity"], ["consolidation", "airspace disease"], ["opac"]),
    "nodule": (["nodule", "pulmonary nodule"], ["nodular opacity", "rounded density"], ["nod"]),
    "effusion": (["pleural effusion", "effusion"], ["pleural fluid", "layering fluid"], ["eff"]),
    "cardiomegaly": (
        ["cardiomegaly", "enlarged cardiac silhouette"],
        ["cardiac enlargement", "enlarged heart"],
        ["CM"],
    ),
    "pneumothorax": (["pneumothorax"], ["pneumothorax", "pleural air"], ["PTX"]),
}
_NEG = {
    "opacity": ("no focal consolidation", "the lungs are clear", "no consol"),
    "nodule": ("no suspicious pulmonary nodule", "no nodules or masses", "no nod"),
    "effusion": ("no pleural effusion", "the costophrenic angles are sharp", "no eff"),
    "cardiomegaly": ("the heart size is normal", "normal cardiomediastinal silhouette", "heart nl"),
    "pneumothorax": ("no pneumothorax", "no pneumothorax is seen", "no PTX"),
}
_NORMAL = ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.", "NAD.")
_SIZE = {
    "small": ("small", "mild", "sm"),
    "moderate": ("moderate", "moderate", "mod"),
    "large": ("large", "severe", "lg"),
}
_HEDGE = ("possible", "probable", "questionable", "cannot exclude")


@dataclass(frozen=True)
class ReportStyle:
    """How one site writes reports."""

    style: str = "structured"
    vocab: int = 0  # synonym family 0 or 1 (terse uses abbreviations)
    negation_rate: float = 0.5
    hedge_rate: float = 0.1
    label_noise: float = 0.0

    def describe(self) -> str:
        rates = f"neg={self.negation_rate:.2f} hedge={self.hedge_rate:.2f} noise={self.label_noise:.2f}"
        return f"{self.style}/v{self.vocab} {rates}"

    def to_dict(self) -> dict:
        return asdict(self)


def sample_style(rng: np.random.Generator, style: str, label_noise: float) -> ReportStyle:
    """A site's reporting habits for a given style."""
    return ReportStyle(
        style=style,
        vocab=int(rng.integers(2)),
        negation_rate=float(rng.uniform(0.2, 0.8)),
        hedge_rate=float(rng.uniform(0.05, 0.25)),
        label_noise=float(label_noise),
    )


def _where(f: Finding, terse: bool) -> str:
    side = {"right": "R", "left": "L", "bilateral": "bilat"}.get(f.side, "") if terse else f.side
    zone = f.zone if f.zone and f.name != "effusion" else ""
    if f.name in ("opacity", "nodule") and zone and not terse:
        zone = f"{zone} lobe" if zone != "middle" else "mid lung zone"
    return " ".join(p for p in (side, zone) if p)


def _phrase(f: Finding, st: ReportStyle, rng: np.random.Generator) -> str:
    terse = st.style == "terse"
    fam = _SYN[f.name][2 if terse else st.vocab]
    noun = fam[int(rng.integers(len(fam)))]
    size = _SIZE[f.size][2 if terse else int(rng.integers(2))]
    if f.name == "cardiomegaly":  # graded, never "small"
        size = {"small": "mild", "moderate": "moderate", "large": "severe"}[f.size] if not terse else size
    where = _where(f, terse)
    if f.name == "nodule":
        text = f"{round(f.value)} mm {noun} in the {where}" if not terse else f"{round(f.value)}mm {noun} {where}"
    elif f.name == "cardiomegaly":
        text = f"{size} {noun}" if not terse else f"{noun} ({size})"
    elif f.name == "effusion" and f.size == "small" and not terse and rng.random() < 0.5:
        angle = "costophrenic angles" if f.side == "bilateral" else f"{f.side} costophrenic angle"
        text = f"blunting of the {angle}, likely {size} {noun}"
    else:
        text = f"{size} {where} {noun}" if not terse else f"{size} {where} {noun}"
    if rng.random() < st.hedge_rate * (2.0 if f.size == "small" else 0.5):
        text = f"{_HEDGE[int(rng.integers(len(_HEDGE)))]} {text}"
    return " ".join(text.split())


def write_report(findings: list[Finding], st: ReportStyle, rng: np.random.Generator) -> tuple[str, list[str]]:
    """The report text and the names of present findings it leaves out (label noise)."""
    kept = [f for f in findings if rng.random() >= st.label_noise]
    dropped = [f.name for f in findings if f not in kept]
    mentioned = {f.name for f in findings}
    phrases = [_phrase(f, st, rng) for f in kept]
    negs = [
        _NEG[n][2 if st.style == "terse" else st.vocab]
        for n in SYNTHCXR_FINDINGS
        if n not in mentioned and rng.random() < st.negation_rate
    ]
    negs = [negs[i] for i in rng.permutation(len(negs))]  # radiologists do not list negatives in a fixed order
    idx = 2 if st.style == "terse" else st.vocab
    if st.style == "terse":
        body = "; ".join(phrases + negs) or "clear"
        imp = ", ".join(phrases) if phrases else _NORMAL[2]
        return f"{body}. IMP: {imp}".rstrip(".") + ".", dropped
    sentences = [p[0].upper() + p[1:] + "." for p in phrases + negs]
    impression = "; ".join(phrases) if phrases else _NORMAL[idx]
    impression = impression[0].upper() + impression[1:].rstrip(".") + "."
    if st.style == "structured":
        return f"FINDINGS: {' '.join(sentences) or 'Lungs and pleura unremarkable.'} IMPRESSION: {impression}", dropped
    intro = "PA view of the chest." if rng.random() < 0.5 else "Frontal chest radiograph."
    if phrases:
        return f"{intro} {' '.join(sentences)} Overall, {impression[0].lower() + impression[1:]}", dropped
    return f"{intro} {' '.join(sentences)} {impression}".replace("  ", " "), dropped
