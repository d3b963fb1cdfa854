"""Per-site acquisition: the scanner, protocol and display differences that make one hospital's films look unlike
another's (the covariate shift federated methods must cope with).

A site draws one :class:`AcquisitionShift` from a seeded generator, scaled by ``acq_shift``; ``acq_shift = 0`` gives
the neutral protocol at every site. The burned-in side marker is placed per site on purpose: it is a realistic
shortcut (site identity, and through label skew the label, is readable from a corner of the film).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AcquisitionShift", "sample_shift", "apply_acquisition", "film_to_display"]

# 5x3 bitmaps of the side markers
_GLYPHS = {
    "L": np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=np.float32),
    "R": np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]], dtype=np.float32),
}


@dataclass(frozen=True)
class AcquisitionShift:
    """One site's acquisition protocol (the neutral protocol is the default of every field)."""

    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.015  # additive Gaussian sigma
    quantum_noise: float = 0.02  # signal-dependent sigma, times sqrt(intensity)
    blur: float = 0.0  # Gaussian sigma in output pixels
    res_loss: bool = False  # downsample by 2 then upsample (an older detector)
    invert: bool = False  # MONOCHROME1-like display
    marker: str = ""  # "", "L" or "R"
    marker_corner: int = 0  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    ap_rate: float = 0.15  # share of AP / low-inspiration films
    jitter: float = 1.0  # positioning jitter scale

    def describe(self) -> str:
        """One line for the summary."""
        parts = [f"c={self.contrast:.2f}", f"b={self.brightness:+.2f}", f"g={self.gamma:.2f}"]
        parts += [f"noise={self.noise:.3f}", f"blur={self.blur:.1f}", f"AP={self.ap_rate:.2f}"]
        parts += ["lowres"] * self.res_loss + ["inverted"] * self.invert
        parts += [f"marker={self.marker}@{self.marker_corner}"] if self.marker else []
        return " ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_shift(rng: np.random.Generator, scale: float, *, invert: bool | None = None) -> AcquisitionShift:
    """A site's protocol: deviations from neutral grow with ``scale`` (0 = neutral); ``invert`` forces the display."""
    if scale <= 0:
        return AcquisitionShift(invert=bool(invert))
    n = rng.normal(size=6)
    return AcquisitionShift(
        contrast=float(np.exp(0.22 * scale * n[0])),
        brightness=float(np.clip(0.06 * scale * n[1], -0.2, 0.2)),
        gamma=float(np.exp(0.2 * scale * n[2])),
        noise=float(0.015 + 0.02 * scale * abs(n[3])),
        quantum_noise=float(0.02 + 0.02 * scale * rng.random()),
        blur=float(min(2.0, 0.5 * scale * abs(n[4]))),
        res_loss=bool(rng.random() < 0.25 * min(scale, 2)),
        invert=bool(rng.random() < 0.12 * min(scale, 2)) if invert is None else invert,
        marker=str(rng.choice(["", "L", "R"], p=[0.3, 0.35, 0.35])) if rng.random() < min(1.0, scale) else "",
        marker_corner=int(rng.integers(4)),
        ap_rate=float(np.clip(0.15 + 0.15 * scale * n[5], 0.0, 0.7)),
        jitter=float(1.0 + 0.5 * scale * rng.random()),
    )


def film_to_display(density: np.ndarray) -> np.ndarray:
    """Attenuation -> brightness in [0, 1] (dense = bright), before any site-specific processing."""
    return (1.0 - np.exp(-1.3 * np.maximum(density, 0.0))) / (1.0 - np.exp(-1.3 * 2.0))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, radius, mode="edge")
    rows = sum(w * pad[:, i : i + img.shape[1]] for i, w in enumerate(k))
    return sum(w * rows[i : i + img.shape[0], :] for i, w in enumerate(k))


def _draw_marker(img: np.ndarray, shift: AcquisitionShift) -> None:
    n = img.shape[0]
    cell = max(1, n // 48)
    glyph = np.kron(_GLYPHS[shift.marker], np.ones((cell, cell), dtype=np.float32))
    h, w = glyph.shape
    m = max(1, n // 24)
    r0 = m if shift.marker_corner in (0, 1) else n - m - h
    c0 = m if shift.marker_corner in (0, 2) else n - m - w
    region = img[r0 : r0 + h, c0 : c0 + w]
    img[r0 : r0 + h, c0 : c0 + w] = np.maximum(region, 0.95 * glyph)


def apply_acquisition(img: np.ndarray, shift: AcquisitionShift, rng: np.random.Generator) -> np.ndarray:
    """Site protocol on a display image in [0, 1] at output size; returns a new float32 array in [0, 1]."""
    out = img.astype(np.float32)
    if shift.res_loss and out.shape[0] % 2 == 0:
        n = out.shape[0]
        out = out.reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3)).repeat(2, axis=0).repeat(2, axis=1)
    if shift.blur > 0.2:
        out = _gaussian_blur(out, shift.blur * out.shape[0] / 64)
    out = np.clip(out, 0.0, 1.0) ** shift.gamma
    out = (out - 0.5) * shift.contrast + 0.5 + shift.brightness
    noise = rng.standard_normal(out.shape).astype(np.float32)
    out = out + noise * (shift.noise + shift.quantum_noise * np.sqrt(np.clip(out, 0.0, 1.0)))
    out = np.clip(out, 0.0, 1.0)
    if shift.marker:
        _draw_marker(out, shift)
    if shift.invert:
        out = 1.0 - out
    return out
