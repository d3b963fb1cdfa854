"""SynthCXR heterogeneity: config validation, scenarios, label skew, balanced test sets and report styles."""

from __future__ import annotations

import numpy as np
import pytest

from flare_vlp.data.manifest import SYNTHCXR_FINDINGS
from flare_vlp.data.synthetic import SynthConfig, render_sample, sweep_grid
from flare_vlp.data.synthetic.findings import BASE_MIX, sample_labels
from flare_vlp.data.synthetic.reports import _NORMAL, _SYN, STYLES
from flare_vlp.data.synthetic.sites import BALANCED_MIX, build_sites, site_sizes


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"sites": 0}, "sites"),
        ({"samples": -1}, "samples"),
        ({"alpha": 0.0}, "alpha"),
        ({"acq_shift": -1.0}, "acq_shift"),
        ({"size": 65}, "size"),
        ({"supersample": 0}, "supersample"),
        ({"min_site_fraction": 0.5}, "min_site_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"label_noise": 1.5}, "label_noise"),
        ({"scenario": "chaos"}, "scenario"),
        ({"focus_finding": "fracture"}, "focus_finding"),
        ({"scenario": "noisy_reports", "sites": 1}, "sites"),
    ],
)
def test_ill_args_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SynthConfig(**kwargs)


def test_preset_rejects_unknown_names():
    with pytest.raises(ValueError, match="`scenario`"):
        SynthConfig.preset("nope")
    with pytest.raises(ValueError, match="unknown SynthConfig field"):
        SynthConfig.preset("iid", sitez=3)


def test_site_sizes_sum_and_respect_minimum():
    cfg = SynthConfig(sites=6, samples=1000, size_beta=0.3, min_site_fraction=0.05)
    sizes = site_sizes(cfg)
    assert sum(sizes) == 1000 and min(sizes) >= 49


def test_label_skew_differs_with_small_alpha_not_in_iid():
    skewed = [np.array(s.mix) for s in build_sites(SynthConfig(sites=5, alpha=0.1))]
    spread = max(np.abs(a - b).sum() for a in skewed for b in skewed)
    assert spread > 0.8
    iid = build_sites(SynthConfig.preset("iid", sites=5))
    assert all(np.allclose(s.mix, BASE_MIX) for s in iid)
    assert len({s.shift for s in iid}) == 1 and len({s.style for s in iid}) == 1


def test_default_test_sets_have_enough_positives_per_finding():
    # label draws of a 300-image balanced test set (the default test_per_site)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        labels = [sample_labels(rng, np.asarray(BALANCED_MIX), 1.0) for _ in range(300)]
        for f in SYNTHCXR_FINDINGS:
            assert sum(lab[f] for lab in labels) >= 30, (seed, f)


def test_rendered_test_sets_have_every_finding_at_every_site():
    cfg = SynthConfig(sites=3, alpha=0.05, test_per_site=60)
    for site in build_sites(cfg):
        labels = [render_sample(cfg, site, "test", i)[1] for i in range(site.n_test)]
        assert all(sum(lab[f] for lab in labels) >= 4 for f in SYNTHCXR_FINDINGS), site.name


def test_small_shifted_site_scenario():
    cfg = SynthConfig.preset("small_shifted_site", sites=4, samples=1000, focus_finding="nodule")
    sites = build_sites(cfg)
    small, others = sites[-1], sites[:-1]
    j = 1 + SYNTHCXR_FINDINGS.index("nodule")
    assert small.n_train + small.n_val == min(s.n_train + s.n_val for s in sites)
    assert small.shift.invert and small.mix[j] == pytest.approx(0.6)
    assert all(s.mix[j] < 0.1 for s in others)


def _mentions(report: str, finding: str) -> bool:
    return any(word.lower() in report.lower() for fam in _SYN[finding] for word in fam)


def test_reports_mention_present_findings_in_three_styles():
    cfg = SynthConfig(sites=3, label_noise=0.0)
    sites = build_sites(cfg)
    assert {s.style.style for s in sites} == set(STYLES)
    for site in sites:
        for i in range(25):
            _, labels, report, dropped = render_sample(cfg, site, "test", i)
            assert dropped == []
            assert all(_mentions(report, f) for f in SYNTHCXR_FINDINGS if labels[f]), report


def test_noisy_reports_leave_out_findings_but_keep_labels():
    cfg = SynthConfig.preset("noisy_reports", sites=2, noisy_label_noise=1.0, label_noise=0.0)
    noisy = build_sites(cfg)[-1]
    assert noisy.style.label_noise == 1.0 and build_sites(cfg)[0].style.label_noise == 0.0
    abnormal = 0
    for i in range(20):
        _, labels, report, dropped = render_sample(cfg, noisy, "test", i)
        present = [f for f in SYNTHCXR_FINDINGS if labels[f]]
        assert dropped == present
        if present:
            abnormal += 1
            assert any(n in report for n in _NORMAL), report
    assert abnormal > 5


def test_sweep_grid_varies_only_heterogeneity():
    grid = sweep_grid([0.1, 1.0], [0.0, 1.0], sites=3, seed=4)
    assert [(c.alpha, c.acq_shift) for c in grid] == [(0.1, 0.0), (0.1, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert {(c.sites, c.seed) for c in grid} == {(3, 4)}


def test_inside_unseen_site_lies_within_the_training_sites_range():
    cfg = SynthConfig(sites=5, samples=200, seed=3, unseen_site=True, unseen_inside=True, unseen_samples=20)
    sites = {p.name: p for p in build_sites(cfg)}
    assert {"unseen", "unseen-inside"} <= set(sites)
    train = [sites[f"site-{i}"].shift for i in range(1, 6)]
    inside = sites["unseen-inside"].shift
    for field in ("contrast", "brightness", "gamma", "noise", "blur", "ap_rate"):
        values = [getattr(s, field) for s in train]
        assert min(values) - 1e-9 <= getattr(inside, field) <= max(values) + 1e-9, field
    assert (inside.invert, inside.res_loss, inside.marker) in {(s.invert, s.res_loss, s.marker) for s in train}
    assert sites["unseen-inside"].n_train == sites["unseen-inside"].n_val == 0
    # adding the inside site changes no other site
    plain = build_sites(SynthConfig(sites=5, samples=200, seed=3, unseen_site=True, unseen_samples=20))
    plain = {p.name: p for p in plain}
    assert all(plain[name] == sites[name] for name in plain)
