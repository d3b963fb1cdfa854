"""The five SynthCXR findings: which are present (primary class + co-occurrence), their attributes, their rendering.

Attributes (size, side, zone, a measurement) are drawn once and feed both the image and the report, so a report that
says "small left apical pneumothorax" describes what was drawn. Sizes start small enough to be near the resolution
limit at 64 px, and cardiomegaly's CTR range overlaps the normal one, so no finding is trivially separable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flare_vlp.data.manifest import SYNTHCXR_FINDINGS
from flare_vlp.data.synthetic.anatomy import Anatomy, Grid, Layers, lung_radius, soft, upsample

__all__ = ["PRIMARY_CLASSES", "BASE_MIX", "Finding", "sample_findings", "render_findings", "MM_PER_UNIT"]

PRIMARY_CLASSES: tuple[str, ...] = ("normal", *SYNTHCXR_FINDINGS)
"""A sample's primary class decides its main finding; the site label skew is a mix over these."""

BASE_MIX: tuple[float, ...] = (0.30, 0.20, 0.15, 0.13, 0.12, 0.10)
"""Population primary-class mix (normal, opacity, nodule, effusion, cardiomegaly, pneumothorax)."""

MM_PER_UNIT = 230.0
"""Millimetres per thorax unit (a ~300 mm thorax spans 1.3 units)."""

# (from, to, probability at cooccurrence=1): heart failure -> effusion -> basal atelectasis/opacity.
_LINKS = (("cardiomegaly", "effusion", 0.35), ("effusion", "opacity", 0.3), ("opacity", "effusion", 0.12))
_BACKGROUND = 0.04  # chance of each other finding in an abnormal film


@dataclass(frozen=True)
class Finding:
    """One present finding. ``side`` is the patient's side; ``value`` is mm (nodule) or the CTR (cardiomegaly)."""

    name: str
    size: str  # small | moderate | large
    side: str  # right | left | bilateral
    zone: str  # upper | middle | lower | apical | lateral | basal | ""
    value: float = 0.0


def sample_labels(rng: np.random.Generator, mix: np.ndarray, cooccurrence: float) -> dict[str, int]:
    """Multi-label vector: the primary class, then co-occurring findings along :data:`_LINKS`."""
    primary = PRIMARY_CLASSES[int(rng.choice(len(PRIMARY_CLASSES), p=mix))]
    present = set() if primary == "normal" else {primary}
    if present:
        for f in SYNTHCXR_FINDINGS:
            if rng.random() < _BACKGROUND * cooccurrence:
                present.add(f)
    for src, dst, p in _LINKS:
        if src in present and rng.random() < min(1.0, p * cooccurrence):
            present.add(dst)
    return {f: int(f in present) for f in SYNTHCXR_FINDINGS}


def _side(rng: np.random.Generator, p_bilateral: float) -> str:
    return "bilateral" if rng.random() < p_bilateral else ("right" if rng.random() < 0.5 else "left")


def _size(rng: np.random.Generator, p: tuple[float, float, float] = (0.4, 0.4, 0.2)) -> str:
    return ("small", "moderate", "large")[int(rng.choice(3, p=p))]


def sample_attributes(rng: np.random.Generator, labels: dict[str, int]) -> list[Finding]:
    """Size / side / zone / measurement of every present finding, in :data:`SYNTHCXR_FINDINGS` order."""
    out = []
    for name in SYNTHCXR_FINDINGS:
        if not labels[name]:
            continue
        if name == "opacity":
            out.append(Finding(name, _size(rng), _side(rng, 0.15), str(rng.choice(["upper", "middle", "lower"]))))
        elif name == "nodule":
            mm = float(rng.uniform(6, 30))
            size = "small" if mm < 12 else ("moderate" if mm < 20 else "large")
            out.append(Finding(name, size, _side(rng, 0.0), str(rng.choice(["upper", "middle", "lower"])), mm))
        elif name == "effusion":
            out.append(Finding(name, _size(rng, (0.35, 0.4, 0.25)), _side(rng, 0.2), "basal"))
        elif name == "cardiomegaly":
            ctr = float(rng.uniform(0.49, 0.70))
            size = "small" if ctr < 0.56 else ("moderate" if ctr < 0.63 else "large")
            out.append(Finding(name, size, "", "", ctr))
        else:
            size = _size(rng, (0.45, 0.35, 0.2))
            zone = "apical" if size == "small" or rng.random() < 0.4 else "lateral"
            out.append(Finding(name, size, _side(rng, 0.0), zone))
    return out


def sample_findings(rng: np.random.Generator, mix: np.ndarray, cooccurrence: float) -> tuple[dict, list[Finding]]:
    """Labels and attributes of one sample."""
    labels = sample_labels(rng, mix, cooccurrence)
    return labels, sample_attributes(rng, labels)


def _sides(side: str) -> tuple[int, ...]:
    # patient right is image left (x < 0) on a PA film
    return {"right": (-1,), "left": (1,), "bilateral": (-1, 1)}[side]


def _zone_y(anat: Anatomy, zone: str, rng: np.random.Generator) -> float:
    top, bottom = anat.lung_top, float(np.mean(anat.dome)) + 0.1
    frac = {"upper": 0.22, "middle": 0.5, "lower": 0.75}[zone] + rng.normal(0, 0.06)
    return top + frac * (bottom - top)


@lru_cache(maxsize=8)
def _lowpass(n: int) -> np.ndarray:
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.rfftfreq(n) * n, indexing="ij"))
    return np.exp(-(f**2) / (2 * 3.5**2)).astype(np.float32)


def _blotches(rng: np.random.Generator, n: int, supersample: int) -> np.ndarray:
    m = n // supersample  # smooth field: output resolution is plenty
    field_ = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((m, m)).astype(np.float32)) * _lowpass(m), s=(m, m))
    return upsample((field_ / (field_.std() + 1e-6)).astype(np.float32), supersample)


def _opacity(layers: Layers, g: Grid, anat: Anatomy, f: Finding, rng: np.random.Generator) -> None:
    radius = {"small": 0.08, "moderate": 0.13, "large": 0.19}[f.size]
    patchy = _blotches(rng, g.x.shape[0], g.supersample)
    for s in _sides(f.side):
        cx = s * (anat.lung_x + rng.uniform(-0.35, 0.35) * anat.lung_a)
        d = np.hypot(g.x - cx, (g.y - _zone_y(anat, f.zone, rng)) * 0.8) / radius
        patch = soft(1.0 - d + 0.3 * patchy, 0.18)
        layers.fill += rng.uniform(0.35, 0.7) * patch


def _nodule(layers: Layers, g: Grid, anat: Anatomy, f: Finding, rng: np.random.Generator) -> None:
    s = _sides(f.side)[0]
    r = f.value / 2 / MM_PER_UNIT
    cx = s * (anat.lung_x + rng.uniform(-0.5, 0.5) * anat.lung_a)
    disc = soft(r - np.hypot(g.x - cx, g.y - _zone_y(anat, f.zone, rng)), 0.6 * g.px)
    layers.lines += rng.uniform(0.2, 0.35) * disc


def _effusion(layers: Layers, g: Grid, anat: Anatomy, f: Finding, rng: np.random.Generator) -> None:
    height = {"small": 0.07, "moderate": 0.2, "large": 0.34}[f.size] * rng.uniform(0.8, 1.2)
    for s in _sides(f.side):
        base = anat.dome[0 if s < 0 else 1] + 0.24
        lateral = np.clip(s * (g.x - s * anat.lung_x) / anat.lung_a, 0.0, 1.0)  # 1 at the lateral pleura
        top = base - height * (0.45 + 0.55 * lateral**1.5)  # meniscus climbs laterally
        side_mask = soft(s * g.x, 2 * g.px)
        layers.fill += rng.uniform(0.8, 1.0) * soft(g.y - top, 2 * g.px) * side_mask


def _pneumothorax(layers: Layers, g: Grid, anat: Anatomy, f: Finding, rng: np.random.Generator) -> None:
    s = _sides(f.side)[0]
    width = {"small": 0.05, "moderate": 0.09, "large": 0.14}[f.size] * rng.uniform(0.8, 1.2)
    r = lung_radius(g, anat, s)
    edge = 1.0 - width / anat.lung_a
    region = soft(g.y - anat.lung_top - 0.1, 0.05) if f.zone == "lateral" else 1.0
    region = region * soft((anat.lung_top + 0.45 if f.zone == "apical" else np.mean(anat.dome)) - g.y, 0.06)
    region = region * soft(s * (g.x - s * anat.lung_x) + 0.3 * anat.lung_a, 0.05) * soft(s * g.x, 2 * g.px)
    layers.lucent += soft(r - edge, g.px / anat.lung_a) * region
    layers.lines += 0.14 * np.exp(-(((r - edge) * anat.lung_a / (0.8 * g.px)) ** 2)) * region


_RENDER = {"opacity": _opacity, "nodule": _nodule, "effusion": _effusion, "pneumothorax": _pneumothorax}


def render_findings(layers: Layers, g: Grid, anat: Anatomy, findings: list[Finding], rng: np.random.Generator) -> None:
    """Draw every finding into ``layers`` (cardiomegaly is drawn by the anatomy through its CTR)."""
    for f in findings:
        if f.name in _RENDER:
            _RENDER[f.name](layers, g, anat, f, rng)
