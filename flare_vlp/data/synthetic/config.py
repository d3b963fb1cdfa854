"""`SynthConfig`: every knob of the SynthCXR generator in one frozen, validated dataclass, plus scenario presets.

The scenario is structural (it decides *which* site is special), while the numeric fields set *how much*
heterogeneity there is. ``SynthConfig.preset(name, **overrides)`` is the one-call way to get a documented setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from flare_vlp.data.manifest import SYNTHCXR_FINDINGS

__all__ = ["SynthConfig", "SCENARIOS", "Scenario", "sweep_grid"]

Scenario = Literal["default", "iid", "small_shifted_site", "noisy_reports"]

SCENARIOS: dict[str, str] = {
    "default": "Dirichlet label skew, per-site acquisition shift and per-site report style.",
    "iid": "Control: equal-sized sites that all draw from the base label mix, with the same acquisition and report "
    "style "
    "(alpha and acq_shift are ignored), so the effect of heterogeneity can be isolated.",
    "small_shifted_site": "The last site is small, is the main source of `focus_finding` and has a strong "
    "acquisition shift (inverted display); the other sites rarely see that finding.",
    "noisy_reports": "The last site's reports leave out a present finding with probability `noisy_label_noise` "
    "(labels stay the truth).",
}
"""Scenario name -> what it does (shown by ``flare-vlp synth --help`` and in the summary)."""

_SIZES = (32, 64, 96, 128, 160, 192, 224, 256)


@dataclass(frozen=True)
class SynthConfig:
    """Configuration of a SynthCXR data set (see ``docs/synthetic-data.md``).

    ``samples`` counts the train+val pool spread over the sites; per-site test sets (``test_per_site`` each), the
    unseen site and the public split are drawn in addition, so changing the test size never changes training data.

    Args:
        sites: number of federated sites ``site-1..site-K``. Default 5.
        samples: train+val samples over all sites. Default 2000.
        alpha: Dirichlet concentration of each site's primary-class mix (smaller = more skew; ``inf`` = none).
        acq_shift: scale of the per-site acquisition shift (0 = identical acquisition everywhere). Default 1.0.
        size: output image side in pixels. Default 64.
        seed: the one seed everything is derived from. Default 0.
        supersample: render at ``size * supersample`` then box-downsample (anti-aliasing). Default 2.
        size_beta: Dirichlet concentration of the site sizes (smaller = more imbalance). Default 2.0.
        min_site_fraction: smallest share of ``samples`` a site gets. Default 0.05.
        val_fraction: share of each site's pool used for validation. Default 0.1.
        test_per_site: label-balanced test images per site. Default 300.
        unseen_site: add a held-out ``unseen`` site (test split only) with a stronger shift. Default False.
        unseen_samples: test images of the unseen site (and of the inside-unseen site). Default 300.
        unseen_inside: add a held-out ``unseen-inside`` site (test split only) whose acquisition is a random convex
            mixture of the training sites' (inside their range: a site reweighting could serve), beside ``unseen``
            (outside it: a negative control). Default False.
        public_samples: images of the shared ``public`` split (CreamFL); 0 = none. Default 0.
        label_noise: probability that a report leaves out a present finding, at every site. Default 0.02.
        scenario: one of :data:`SCENARIOS`. Default ``"default"``.
        focus_finding: the finding the small site of ``small_shifted_site`` is the main source of.
        noisy_label_noise: report label noise of the noisy site in ``noisy_reports``. Default 0.3.
        cooccurrence: strength of finding co-occurrence (0 = independent secondary findings). Default 1.0.
    """

    sites: int = field(default=5, metadata={"help": "number of federated sites (site-1..site-K)"})
    samples: int = field(default=2000, metadata={"help": "train+val samples over all sites (test sets are extra)"})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration of the label skew (inf = none)"})
    acq_shift: float = field(default=1.0, metadata={"help": "scale of the per-site acquisition shift (0 = none)"})
    size: int = field(default=64, metadata={"help": f"image side in pixels, one of {_SIZES}"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw"})
    supersample: int = field(default=2, metadata={"help": "render at size*supersample, then box-downsample"})
    size_beta: float = field(default=2.0, metadata={"help": "Dirichlet concentration of site sizes"})
    min_site_fraction: float = field(default=0.05, metadata={"help": "smallest share of samples per site"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of each site's pool used for validation"})
    test_per_site: int = field(default=300, metadata={"help": "label-balanced test images per site"})
    unseen_site: bool = field(default=False, metadata={"help": "add a held-out 'unseen' test-only site"})
    unseen_samples: int = field(default=300, metadata={"help": "test images of the unseen site"})
    unseen_inside: bool = field(
        default=False, metadata={"help": "add 'unseen-inside': a test-only site with a shift inside the sites' range"}
    )
    public_samples: int = field(default=0, metadata={"help": "images of the shared public split (0 = none)"})
    label_noise: float = field(default=0.02, metadata={"help": "P(a present finding is left out of the report)"})
    scenario: Scenario = field(default="default", metadata={"help": f"one of {list(SCENARIOS)}"})
    focus_finding: str = field(default="pneumothorax", metadata={"help": "finding of the small_shifted_site"})
    noisy_label_noise: float = field(default=0.3, metadata={"help": "label noise of the noisy_reports site"})
    cooccurrence: float = field(default=1.0, metadata={"help": "strength of finding co-occurrence"})

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"`{name}` must be {expected}, got {getattr(self, name)!r}.")

        need(isinstance(self.sites, int) and self.sites >= 1, "sites", "an integer >= 1")
        need(isinstance(self.samples, int) and self.samples >= 0, "samples", "an integer >= 0")
        need(self.alpha > 0 and not math.isnan(self.alpha), "alpha", "> 0 (use inf for no label skew)")
        need(0 <= self.acq_shift <= 5, "acq_shift", "in [0, 5]")
        need(self.size in _SIZES, "size", f"one of {_SIZES}")
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer >= 0")
        need(self.supersample in (1, 2, 3, 4), "supersample", "one of (1, 2, 3, 4)")
        need(self.size_beta > 0, "size_beta", "> 0")
        need(0 <= self.min_site_fraction <= 1 / self.sites, "min_site_fraction", f"in [0, 1/sites={1 / self.sites:g}]")
        need(0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)")
        need(isinstance(self.test_per_site, int) and self.test_per_site >= 0, "test_per_site", "an integer >= 0")
        need(isinstance(self.unseen_samples, int) and self.unseen_samples >= 0, "unseen_samples", "an integer >= 0")
        need(isinstance(self.public_samples, int) and self.public_samples >= 0, "public_samples", "an integer >= 0")
        need(0 <= self.label_noise <= 1, "label_noise", "in [0, 1]")
        need(self.scenario in SCENARIOS, "scenario", f"one of {list(SCENARIOS)}")
        need(self.focus_finding in SYNTHCXR_FINDINGS, "focus_finding", f"one of {list(SYNTHCXR_FINDINGS)}")
        need(0 <= self.noisy_label_noise <= 1, "noisy_label_noise", "in [0, 1]")
        need(0 <= self.cooccurrence <= 3, "cooccurrence", "in [0, 3]")
        if self.scenario in ("small_shifted_site", "noisy_reports"):
            need(self.sites >= 2, "sites", f">= 2 for scenario '{self.scenario}'")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """A documented scenario with optional field overrides, e.g. ``SynthConfig.preset("iid", sites=3)``.

        Raises:
            ValueError: unknown scenario name or field.
        """
        if name not in SCENARIOS:
            raise ValueError(f"`scenario` must be one of {list(SCENARIOS)}, got {name!r}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown SynthConfig field(s) {unknown[:3]}; fields: {sorted(fields)}")
        values: dict[str, Any] = {"scenario": name}
        if name == "iid":
            values.update(alpha=math.inf, acq_shift=0.0)
        values.update(overrides)
        return cls(**values)

    @property
    def render_size(self) -> int:
        return self.size * self.supersample

    @property
    def default_workers(self) -> int:
        return max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``inf`` is written as the string ``"inf"``)."""
        out = dataclasses.asdict(self)
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in out.items()}


def sweep_grid(alphas: list[float], acq_shifts: list[float], **overrides: Any) -> list[SynthConfig]:
    """The alpha x acquisition-shift grid for dose-response plots (same seed, so only heterogeneity changes).

    Example:
        >>> [c.alpha for c in sweep_grid([0.1, 1.0], [0.0], sites=3)]
        [0.1, 1.0]
    """
    return [SynthConfig(**{**overrides, "alpha": a, "acq_shift": s}) for a in alphas for s in acq_shifts]
