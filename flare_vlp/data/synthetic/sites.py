"""Site profiles: how each SynthCXR site differs (label mix, size, acquisition, report style, label noise).

Everything here is drawn from ``np.random.default_rng(SeedSequence([seed, _SITE_STREAM, site_code]))``, so a site's
profile depends only on the seed and its code, never on how many other sites exist or on the generation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flare_vlp.data.synthetic.acquisition import AcquisitionShift, sample_shift
from flare_vlp.data.synthetic.config import SynthConfig
from flare_vlp.data.synthetic.findings import BASE_MIX, PRIMARY_CLASSES
from flare_vlp.data.synthetic.reports import STYLES, ReportStyle, sample_style

__all__ = [
    "SiteProfile",
    "build_sites",
    "site_sizes",
    "mix_shifts",
    "UNSEEN",
    "UNSEEN_INSIDE",
    "PUBLIC",
    "BALANCED_MIX",
]

UNSEEN, UNSEEN_INSIDE, PUBLIC = "unseen", "unseen-inside", "public"
_SITE_STREAM, _LAYOUT_STREAM = 7, 11
BALANCED_MIX: tuple[float, ...] = tuple([1.0 / len(PRIMARY_CLASSES)] * len(PRIMARY_CLASSES))
"""Test sets draw every primary class equally often, so each finding has enough positives at every site."""


@dataclass(frozen=True)
class SiteProfile:
    """One site: ``code`` seeds its samples; ``mix`` is its train/val primary-class mix."""

    name: str
    code: int
    mix: tuple[float, ...]
    n_train: int
    n_val: int
    n_test: int
    shift: AcquisitionShift
    style: ReportStyle
    n_public: int = 0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mix": dict(zip(PRIMARY_CLASSES, [round(p, 4) for p in self.mix])),
            "n": {"train": self.n_train, "val": self.n_val, "test": self.n_test, "public": self.n_public},
            "shift": self.shift.to_dict(),
            "style": self.style.to_dict(),
        }


def _rng(cfg: SynthConfig, *codes: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *codes]))


def _round_shares(total: int, shares: np.ndarray) -> list[int]:
    """Largest-remainder rounding so the counts sum exactly to ``total``."""
    raw = shares * total
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out.tolist()


def site_sizes(cfg: SynthConfig) -> list[int]:
    """Train+val pool per site: ``min_site_fraction + (1 - K*min) * Dirichlet(size_beta)``."""
    k, m = cfg.sites, cfg.min_site_fraction
    rng = _rng(cfg, _LAYOUT_STREAM)
    if cfg.scenario == "iid":
        shares = np.full(k, 1.0 / k)
    elif cfg.scenario == "small_shifted_site":
        small = max(m, 0.04)
        rest = m + (1 - (k - 1) * m) * rng.dirichlet(np.full(k - 1, cfg.size_beta)) if k > 1 else np.ones(0)
        shares = np.append(rest / rest.sum() * (1 - small), small)
    else:
        shares = m + (1 - k * m) * rng.dirichlet(np.full(k, cfg.size_beta))
    return _round_shares(cfg.samples, shares / shares.sum())


def _label_mix(cfg: SynthConfig, rng: np.random.Generator, last: bool) -> np.ndarray:
    base = np.asarray(BASE_MIX)
    # alpha * K * base, so alpha = 1 with a uniform base is the usual Dirichlet(1, ..., 1) skew
    mix = base.copy() if math.isinf(cfg.alpha) or cfg.scenario == "iid" else rng.dirichlet(cfg.alpha * len(base) * base)
    if cfg.scenario == "small_shifted_site":
        j = PRIMARY_CLASSES.index(cfg.focus_finding)
        if last:
            mix = mix * 0.4 / (mix.sum() - mix[j] + 1e-12)
            mix[j] = 0.6
        else:
            mix[j] *= 0.1
    mix = np.maximum(mix, 0.0)
    return mix / mix.sum()


def mix_shifts(shifts: list[AcquisitionShift], weights: np.ndarray, rng: np.random.Generator) -> AcquisitionShift:
    """A protocol inside the range of ``shifts``: numeric fields are the ``weights``-convex combination; the discrete
    ones (low resolution, inversion, marker) are those of one site drawn with probability ``weights``."""
    numeric = ("contrast", "brightness", "gamma", "noise", "quantum_noise", "blur", "ap_rate", "jitter")
    donor = shifts[int(rng.choice(len(shifts), p=weights))]
    values = {f: float(sum(w * getattr(sh, f) for w, sh in zip(weights, shifts))) for f in numeric}
    return AcquisitionShift(
        **values, res_loss=donor.res_loss, invert=donor.invert, marker=donor.marker, marker_corner=donor.marker_corner
    )


def build_sites(cfg: SynthConfig) -> list[SiteProfile]:
    """``site-1..site-K``, then ``unseen`` / ``unseen-inside`` (if asked) and ``public`` (if ``public_samples``)."""
    sizes = site_sizes(cfg)
    style_offset = int(_rng(cfg, _LAYOUT_STREAM, 1).integers(len(STYLES)))
    shared_style = sample_style(_rng(cfg, _LAYOUT_STREAM, 2), STYLES[0], cfg.label_noise)
    out = []
    for i in range(cfg.sites):
        rng = _rng(cfg, _SITE_STREAM, i + 1)
        last = i == cfg.sites - 1
        mix = _label_mix(cfg, rng, last)
        if cfg.scenario == "iid":
            shift, style = AcquisitionShift(), shared_style
        else:
            special = cfg.scenario == "small_shifted_site" and last
            shift = sample_shift(rng, max(2.0 * cfg.acq_shift, 1.5), invert=True) if special else None
            shift = shift or sample_shift(rng, cfg.acq_shift)
            noise = cfg.noisy_label_noise if cfg.scenario == "noisy_reports" and last else cfg.label_noise
            style = sample_style(rng, STYLES[(style_offset + i) % len(STYLES)], noise)
        n_val = round(sizes[i] * cfg.val_fraction)
        out.append(
            SiteProfile(f"site-{i + 1}", i + 1, tuple(mix), sizes[i] - n_val, n_val, cfg.test_per_site, shift, style)
        )
    if cfg.unseen_site:
        rng = _rng(cfg, _SITE_STREAM, 1001)
        shift = sample_shift(rng, max(2.0 * cfg.acq_shift, 1.0))
        style = sample_style(rng, STYLES[int(rng.integers(len(STYLES)))], cfg.label_noise)
        out.append(SiteProfile(UNSEEN, 1001, BALANCED_MIX, 0, 0, cfg.unseen_samples, shift, style))
    if cfg.unseen_inside:
        rng = _rng(cfg, _SITE_STREAM, 1003)
        train_sites = out[: cfg.sites]
        weights = rng.dirichlet(np.ones(cfg.sites))
        shift = mix_shifts([p.shift for p in train_sites], weights, rng)
        style = train_sites[int(rng.choice(cfg.sites, p=weights))].style
        out.append(SiteProfile(UNSEEN_INSIDE, 1003, BALANCED_MIX, 0, 0, cfg.unseen_samples, shift, style))
    if cfg.public_samples:
        rng = _rng(cfg, _SITE_STREAM, 1002)
        mix = rng.dirichlet(5.0 * len(BASE_MIX) * np.asarray(BASE_MIX))
        shift = sample_shift(rng, cfg.acq_shift) if cfg.scenario != "iid" else AcquisitionShift()
        style = sample_style(rng, STYLES[int(rng.integers(len(STYLES)))], cfg.label_noise)
        out.append(SiteProfile(PUBLIC, 1002, tuple(mix), 0, 0, 0, shift, style, n_public=cfg.public_samples))
    return out
