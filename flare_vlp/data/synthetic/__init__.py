"""SynthCXR: procedural chest X-rays and radiology reports with per-site heterogeneity (``docs/synthetic-data.md``).

No real image-text pairs can be downloaded where flare_vlp is tested, so this generator produces data that behaves
like a multi-site chest X-ray collection: learnable but not trivial findings, per-site label skew, acquisition shift
and report style, an optional unseen site and a public split, all written in the project's manifest format.

Example:
    >>> from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr
    >>> summary = generate_synthcxr(SynthConfig(sites=3, samples=600), "data/synthcxr")  # doctest: +SKIP
    >>> print(summary.to_text())  # doctest: +SKIP
"""

from flare_vlp.data.synthetic.config import SCENARIOS, SynthConfig, sweep_grid
from flare_vlp.data.synthetic.generator import generate_synthcxr, render_sample
from flare_vlp.data.synthetic.montage import render_montage
from flare_vlp.data.synthetic.summary import SynthSummary

__all__ = [
    "SynthConfig",
    "SCENARIOS",
    "generate_synthcxr",
    "render_sample",
    "SynthSummary",
    "render_montage",
    "sweep_grid",
]
