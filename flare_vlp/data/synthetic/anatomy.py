"""Normal chest anatomy of a SynthCXR film as soft-edged density layers on a (rotated, scaled, shifted) grid.

Coordinates are in "thorax units": x and y run over [-1, 1] across the rendered square, y grows downwards and the
patient's right is on the image left (PA convention). Every shape has a soft edge (a logistic of a signed
distance), so box-downsampling the supersampled render gives anti-aliased boundaries. The confounders the spec asks
for (AP / low-inspiration films, an elevated hemidiaphragm, breast and nipple shadows, skin folds) live here because
they are variations of normal anatomy that imitate findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "Anatomy",
    "Grid",
    "Layers",
    "sample_anatomy",
    "make_grid",
    "render_anatomy",
    "soft",
    "segment_distance",
    "lung_radius",
]

THORAX_HALF_WIDTH = 0.65
"""Lateral lung edge at |x| = lung_x + lung_a ~ 0.65; used to turn a cardiothoracic ratio into a heart width."""


@dataclass(frozen=True)
class Anatomy:
    """Per-image anatomy and positioning (all lengths in thorax units)."""

    rot: float
    scale: float
    shift_x: float
    shift_y: float
    lung_x: float  # |x| of each lung's centre
    lung_a: float  # lung half width
    lung_top: float  # apex y
    dome: tuple[float, float]  # hemidiaphragm peak y, (patient right = image left, patient left)
    ctr: float  # cardiothoracic ratio that sets the heart width
    heart_mag: float  # AP magnification of the heart shadow
    ap: bool
    breasts: float  # 0 = none, else density of the breast shadows
    nipples: bool
    skin_fold: int  # 0 = none, -1 image-left, +1 image-right


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates after the per-image rigid jitter (``x``, ``y``) and before it (``u``, ``v``)."""

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    px: float  # one render pixel in thorax units
    supersample: int = 1  # render pixels per output pixel (textures are drawn at output resolution)


@dataclass
class Layers:
    """Density contributions; :meth:`density` composes them (findings edit them in place before that)."""

    body: np.ndarray
    soft: np.ndarray
    bone: np.ndarray
    air: np.ndarray
    markings: np.ndarray
    fill: np.ndarray
    lucent: np.ndarray
    lines: np.ndarray

    def density(self) -> np.ndarray:
        air = self.air * (1.0 - np.clip(self.fill, 0.0, 1.0))
        vessels = 0.15 * self.markings * air * (1.0 - np.clip(self.lucent, 0.0, 1.0))
        return self.body + self.soft + self.bone - 0.6 * air + vessels - 0.15 * self.lucent * air + self.lines


def soft(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft edge: 1 where ``signed`` > 2*width (inside), 0 where < -2*width, a linear ramp between.

    A ramp rather than a logistic: it is three cheap array ops, and rendering is dominated by these edges.
    """
    out = np.multiply(signed, 0.25 / width, dtype=np.float32)
    out += 0.5
    return np.clip(out, 0.0, 1.0)


def segment_distance(x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    """Distance of every grid point to the segment p-q (for clavicles, pleural lines, skin folds)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)


def sample_anatomy(rng: np.random.Generator, *, ap_rate: float, jitter: float) -> Anatomy:
    """Draw one patient's anatomy; ``ap_rate`` is the site's share of AP / low-inspiration films."""
    ap = bool(rng.random() < ap_rate)
    dome_peak = 0.36 + rng.normal(0, 0.04) - (0.12 if ap else 0.0)
    dome = [dome_peak + rng.normal(0, 0.015), dome_peak + 0.03 + rng.normal(0, 0.015)]
    if rng.random() < 0.08:  # elevated hemidiaphragm imitates a basal effusion
        dome[int(rng.integers(2))] -= rng.uniform(0.1, 0.2)
    female = rng.random() < 0.5
    return Anatomy(
        rot=float(rng.normal(0, 0.035 * jitter)),
        scale=float(1.0 + rng.normal(0, 0.04 * jitter)),
        shift_x=float(rng.normal(0, 0.03 * jitter)),
        shift_y=float(rng.normal(0, 0.03 * jitter)),
        lung_x=float(0.36 + rng.normal(0, 0.015)),
        lung_a=float(0.29 + rng.normal(0, 0.015)),
        lung_top=float(-0.66 + rng.normal(0, 0.03) + (0.05 if ap else 0.0)),
        dome=(float(dome[0]), float(dome[1])),
        ctr=float(min(rng.normal(0.45, 0.035), 0.52)),
        heart_mag=1.12 if ap else 1.0,
        ap=ap,
        breasts=float(rng.uniform(0.08, 0.2)) if female else 0.0,
        nipples=bool(rng.random() < 0.15),
        skin_fold=int(rng.choice([-1, 1])) if rng.random() < 0.1 else 0,
    )


def make_grid(n: int, anat: Anatomy, supersample: int = 1) -> Grid:
    """An ``n x n`` grid in thorax units, rotated/scaled/shifted by the anatomy's positioning jitter."""
    c = (np.arange(n, dtype=np.float32) + 0.5) * (2.0 / n) - 1.0
    v, u = np.meshgrid(c, c, indexing="ij")
    cos, sin = np.cos(anat.rot), np.sin(anat.rot)
    xs, ys = u - anat.shift_x, v - anat.shift_y
    x = (cos * xs + sin * ys) / anat.scale
    y = (-sin * xs + cos * ys) / anat.scale
    px = 2.0 / n / anat.scale
    return Grid(x=x.astype(np.float32), y=y.astype(np.float32), u=u, v=v, px=px, supersample=supersample)


@lru_cache(maxsize=8)
def _bandpass(n: int) -> np.ndarray:
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.rfftfreq(n) * n, indexing="ij")) + 1e-6
    return np.exp(-(np.log(f / 18.0) ** 2) / (2 * 0.45**2)).astype(np.float32)


def upsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling; exact after the final box-downsample by the same factor."""
    return img if factor == 1 else img.repeat(factor, axis=0).repeat(factor, axis=1)


def lung_markings(rng: np.random.Generator, n: int, supersample: int = 1) -> np.ndarray:
    """Band-pass noise, rectified so it reads as branching vessels (bright) on dark lung.

    Drawn at output resolution (``n // supersample``): the texture has no edges to anti-alias and the FFT is the
    most expensive step of a sample.
    """
    m = n // supersample
    spec = np.fft.rfft2(rng.standard_normal((m, m)).astype(np.float32)) * _bandpass(m)
    tex = np.fft.irfft2(spec, s=(m, m)).astype(np.float32)
    tex /= tex.std() + 1e-6
    return upsample(np.maximum(tex, 0.0), supersample)


def lung_radius(g: Grid, anat: Anatomy, side: int) -> np.ndarray:
    """Elliptic radius of the lung outline (1 on the pleural surface), used to place rims and pleural lines."""
    bottom = max(anat.dome) + 0.3
    cy, b = (anat.lung_top + bottom) / 2, (bottom - anat.lung_top) / 2
    return np.sqrt(((g.x - side * anat.lung_x) / anat.lung_a) ** 2 + ((g.y - cy) / b) ** 2)


def lung_mask(g: Grid, anat: Anatomy, side: int) -> np.ndarray:
    """Soft mask of one lung: an ellipse cut below by its hemidiaphragm dome; ``side`` -1 = image left."""
    w = 1.2 * g.px
    cx = side * anat.lung_x
    r = lung_radius(g, anat, side)
    dome_y = anat.dome[0 if side < 0 else 1] + 0.26 * ((g.x - cx) / anat.lung_a) ** 2
    medial = np.abs(g.x) - (0.07 + 0.05 * soft(g.y + 0.2, 0.1))
    return soft(1.0 - r, w / anat.lung_a) * soft(dome_y - g.y, w) * soft(medial, w)


def heart_mask(g: Grid, anat: Anatomy, ctr: float) -> np.ndarray:
    """Heart shadow whose width is ``ctr`` x thoracic width, two thirds of it on the patient's left."""
    width = ctr * 2 * THORAX_HALF_WIDTH * anat.heart_mag
    cx, a = 0.15 * width, width / 2
    cy = float(np.mean(anat.dome)) - 0.1
    b = 0.22 * anat.heart_mag
    r = np.sqrt(((g.x - cx) / a) ** 2 + ((g.y - cy) / b) ** 2)
    return soft(1.0 - r, 1.5 * g.px / b)


def render_anatomy(anat: Anatomy, g: Grid, rng: np.random.Generator, ctr: float | None = None) -> Layers:
    """Density layers of a normal chest; ``ctr`` overrides the anatomy's (cardiomegaly sets a larger one)."""
    x, y, w = g.x, g.y, 1.5 * g.px
    body = 0.75 * soft(1.0 - (np.abs(x / 0.86) ** 3 + np.abs((y - 0.2) / 1.25) ** 3) ** (1 / 3), 2 * w)
    body = body * (0.85 + 0.15 * soft(y + 0.8, 0.08))  # soft-tissue shoulders
    heart = heart_mask(g, anat, anat.ctr if ctr is None else ctr)
    medi = soft(0.12 + 0.06 * np.maximum(y + 0.2, 0.0) - np.abs(x), 2 * w) * soft(y + 0.85, w) * soft(0.3 - y, 0.05)
    lungs = np.maximum(lung_mask(g, anat, -1), lung_mask(g, anat, 1))
    air = lungs * (1.0 - np.maximum(heart, medi))
    soft_t = 0.4 * np.maximum(heart, medi) - 0.22 * soft(0.035 - np.abs(x), w) * soft(-0.3 - y, 0.04)
    ribs = _ribs(x, y, rng, anat)
    spine = 0.12 * soft(0.06 - np.abs(x), w) * (0.75 + 0.25 * np.cos(2 * np.pi * y / 0.11))
    clav = np.exp(-((segment_distance(np.abs(x), y, (0.06, -0.6), (0.58, -0.76)) / 0.028) ** 2))  # both sides
    bone = (ribs + spine + 0.3 * clav) * (body > 0.3)
    layers = Layers(
        body=body,
        soft=soft_t,
        bone=bone,
        air=air,
        markings=lung_markings(rng, x.shape[0], g.supersample) * (0.15 + 0.85 * _hilar_weight(x, y)),
        fill=np.zeros_like(x),
        lucent=np.zeros_like(x),
        lines=np.zeros_like(x),
    )
    _add_confounders(layers, anat, g)
    return layers


def _hilar_weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.exp(-(((np.abs(x) - 0.17) ** 2 + (y + 0.02) ** 2) / 0.12))


def _ribs(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, anat: Anatomy) -> np.ndarray:
    spacing = 0.135 + rng.normal(0, 0.006)
    t = y + 0.35 * np.abs(x) - 0.8 * x**2 + rng.uniform(0, spacing)
    bands = 0.5 + 0.5 * np.cos(t * np.float32(2 * np.pi / spacing))
    bands *= bands
    bands = bands * bands * bands  # cos^12(t/2): thin bright rib shadows
    envelope = soft(anat.lung_x + anat.lung_a + 0.05 - np.abs(x), 0.02) * soft(np.abs(x) - 0.06, 0.02)
    return 0.13 * bands * envelope * soft(0.62 - y, 0.05) * soft(y + 0.8, 0.05)


def _add_confounders(layers: Layers, anat: Anatomy, g: Grid) -> None:
    x, y = g.x, g.y
    for s in (-1, 1):
        if anat.breasts:
            r = np.sqrt(((x - s * 0.45) / 0.33) ** 2 + ((y - 0.48) / 0.24) ** 2)
            layers.soft += anat.breasts * soft(1.0 - r, 0.12)
        if anat.nipples:
            layers.soft += 0.18 * soft(0.022 - np.hypot(x - s * 0.43, y - 0.4), g.px)
    if anat.skin_fold:
        s = anat.skin_fold
        d = segment_distance(x, y, (s * 0.5, -0.35), (s * 0.62, 0.45))
        layers.lines += 0.06 * np.exp(-((d / (1.5 * g.px)) ** 2))
