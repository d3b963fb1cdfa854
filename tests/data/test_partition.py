"""Partitioning: deterministic, exact sizes, skew grows as alpha shrinks, bad arguments are named."""

from __future__ import annotations

import numpy as np
import pytest

from flare_vlp.data.manifest import Manifest, Record
from flare_vlp.data.partition import (
    assign_splits,
    class_mix_distance,
    dirichlet_label_skew,
    partition_manifest,
    primary_class,
    size_proportions,
)

FINDINGS = ("no_finding", "opacity", "nodule", "effusion")


def _labels(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 3)) < np.array([0.05, 0.2, 0.4])).astype(int)


def _manifest(n: int = 400) -> Manifest:
    lab = _labels(n)
    records = [
        Record(f"r{i}", f"/img/{i}.png", "text", {"no_finding": int(not any(row)), **dict(zip(FINDINGS[1:], row))})
        for i, row in enumerate(lab.tolist())
    ]
    return Manifest(records, FINDINGS)


def test_primary_class_is_rarest_present_or_normal():
    lab = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 1]])
    # prevalence: col0=1, col1=3, col2=4 -> rarest first
    assert primary_class(lab).tolist() == [0, 1, 3, 2, 2, 1]
    assert primary_class(lab, ignore=[0]).tolist() == [1, 1, 3, 2, 2, 1]


def test_size_proportions_floor_and_sum():
    w = size_proportions(8, 0.3, np.random.default_rng(1), min_fraction=0.05)
    assert w.sum() == pytest.approx(1.0) and w.min() >= 0.05 - 1e-12
    assert np.allclose(size_proportions(4, None, np.random.default_rng(0)), 0.25)


@pytest.mark.parametrize("alpha", [0.1, 1.0, None])
def test_label_skew_deterministic_and_exact_sizes(alpha):
    primary = primary_class(_labels())
    sizes = np.array([100, 300, 600, 1000])
    a = dirichlet_label_skew(primary, 4, alpha, np.random.default_rng(7), site_sizes=sizes)
    b = dirichlet_label_skew(primary, 4, alpha, np.random.default_rng(7), site_sizes=sizes)
    assert np.array_equal(a, b)
    assert np.bincount(a, minlength=4).tolist() == sizes.tolist()


def test_skew_larger_for_small_alpha():
    primary = primary_class(_labels())
    dist = {
        alpha: np.mean(
            [
                class_mix_distance(primary, dirichlet_label_skew(primary, 10, alpha, np.random.default_rng(s)))
                for s in range(3)
            ]
        )
        for alpha in (0.1, 100.0)
    }
    assert dist[0.1] > 0.3 > dist[100.0] and dist[0.1] > 3 * dist[100.0]


def test_min_per_site_respected():
    primary = primary_class(_labels(500))
    site_of = dirichlet_label_skew(
        primary, 5, 0.1, np.random.default_rng(0), site_sizes=[0.96, 0.01, 0.01, 0.01, 0.01], min_per_site=20
    )
    assert np.bincount(site_of, minlength=5).min() >= 20 and site_of.size == 500


def test_assign_splits_counts_and_stratification():
    strata = np.repeat([0, 1], [500, 100])
    splits = assign_splits(600, np.random.default_rng(0), 0.1, 0.2, stratify=strata)
    assert (splits == "test").sum() == 120 and (splits == "val").sum() == 60
    assert 15 <= (splits[strata == 1] == "test").sum() <= 25  # each stratum near the global rate


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_sites": 0}, "n_sites"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"size_beta": 0.0}, "size_beta"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction"),
        ({"min_fraction": 0.5}, "min_fraction"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = {"n_sites": 3, "alpha": 1.0, "size_beta": 1.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        partition_manifest(_manifest(60), **args)


def test_partition_manifest_reassigns_sites_and_splits():
    m = _manifest()
    out = partition_manifest(m, 4, alpha=0.5, size_beta=2.0, seed=3, min_fraction=0.1)
    again = partition_manifest(m, 4, alpha=0.5, size_beta=2.0, seed=3, min_fraction=0.1)
    assert [(r.site, r.split) for r in out] == [(r.site, r.split) for r in again]
    assert [r.id for r in out] == [r.id for r in m] and out.findings == m.findings
    assert out.sites == ["site-1", "site-2", "site-3", "site-4"]
    for site in out.sites:
        assert len(out.select(site=site, split="train")) >= 1
    assert {r.split for r in out} == {"train", "val", "test"}


def test_site_without_train_row_is_named():
    with pytest.raises(ValueError, match="site-"):
        partition_manifest(_manifest(8), 4, alpha=None, val_fraction=0.45, test_fraction=0.45)


def test_deal_iid_keeps_rows_counts_and_test_sets():
    from flare_vlp.data.partition import deal_iid

    rng = np.random.default_rng(0)
    records = []
    for i in range(300):
        site = f"site-{1 + (i % 3)}" if i < 240 else "unseen"
        split = "test" if i >= 200 else ("val" if i % 10 == 0 else "train")
        labels = {"a": int(site == "site-1"), "b": int(rng.random() < 0.5)}  # site-1 holds every "a"
        records.append(Record(f"r{i}", f"/x/{i}.png", "report", labels, site, split))
    manifest = Manifest(records, ("a", "b"))
    dealt = deal_iid(manifest, seed=1)
    assert [r.id for r in dealt] == [r.id for r in manifest]
    for split in ("train", "val", "test"):
        for site in manifest.sites:
            key = (site, split)
            assert sum((r.site, r.split) == key for r in dealt) == sum((r.site, r.split) == key for r in manifest)
    assert [(r.id, r.site) for r in dealt if r.split == "test"] == [
        (r.id, r.site) for r in manifest if r.split == "test"
    ]
    share_a = [np.mean([r.labels["a"] for r in dealt.select(split="train", site=s)]) for s in ("site-1", "site-2")]
    assert 0.15 < share_a[0] < 0.55 and 0.15 < share_a[1] < 0.55  # "a" was all site-1; now spread (1/3 expected)
    assert dealt.sites == manifest.sites
