"""Simulated federations: split a pooled dataset into sites with controlled label skew and size imbalance.

Real multi-institution image-text data is rarely at hand, so a federation is usually simulated from one pooled
dataset (CheXpert, MIMIC-CXR, SynthCXR). Two knobs make sites heterogeneous, following Hsu et al., "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification" (https://arxiv.org/abs/1909.06335):

* ``alpha``: each site's class mix is drawn from ``Dirichlet(alpha * pooled_mix)``; ``alpha -> 0`` gives sites that
  hold (almost) one class each, ``alpha = inf`` (or ``None``) gives IID sites. Because every sample must be placed,
  the measured skew saturates below ``alpha ~ 0.1`` (sites that drew the same class have to share the rest).
* ``size_beta``: site sizes are drawn from ``Dirichlet(size_beta)``, with a floor so no site is starved.

The exact assignment matches both the site sizes and the class counts of the pooled data: the drawn site x class
matrix is fitted to both margins by iterative proportional fitting (which keeps its skew, i.e. its odds ratios) and
rounded to integers. Everything is pure numpy and deterministic from one seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from flare_vlp.data.manifest import Manifest

__all__ = [
    "primary_class",
    "size_proportions",
    "dirichlet_label_skew",
    "assign_splits",
    "class_mix_distance",
    "partition_manifest",
    "deal_iid",
]


def _is_iid(value: float | None) -> bool:
    return value is None or math.isinf(value)


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not (value > 0):  # also rejects NaN
        raise ValueError(f"`{name}` must be > 0 (or None/inf for no skew), got {value}")


def primary_class(label_matrix: np.ndarray | Sequence[Sequence[int]], *, ignore: Sequence[int] = ()) -> np.ndarray:
    """One class per multi-label sample: its rarest present finding, or ``n_findings`` ("normal") when none.

    The rarest finding is used because it is the most informative one for skew: assigning a sample with both
    support devices and pneumothorax by "support devices" would let the common finding swamp the rare one.

    Args:
        label_matrix: ``(n_samples, n_findings)`` 0/1 matrix.
        ignore: finding columns that never count as present (e.g. the index of ``no_finding``).

    Returns:
        int array of length ``n_samples`` with values in ``[0, n_findings]``; ``n_findings`` means normal.
    """
    labels = np.asarray(label_matrix, dtype=np.int64)
    if labels.ndim != 2:
        raise ValueError(f"`label_matrix` must be 2-D (samples x findings), got shape {labels.shape}")
    n, k = labels.shape
    present = labels > 0
    if len(ignore):
        present[:, list(ignore)] = False
    prevalence = present.sum(axis=0)
    # rank findings rarest-first (ties by column order); a sample's class is its present finding of lowest rank
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(prevalence, kind="stable")] = np.arange(k)
    ranks = np.where(present, rank[None, :], k)
    best = ranks.argmin(axis=1) if k else np.zeros(n, dtype=np.int64)
    has_any = present.any(axis=1)
    return np.where(has_any, best, k).astype(np.int64)


def size_proportions(
    n_sites: int, size_beta: float | None, rng: np.random.Generator, min_fraction: float = 0.0
) -> np.ndarray:
    """Fractions of the data per site: ``min_fraction + (1 - n_sites * min_fraction) * Dirichlet(size_beta)``.

    Args:
        n_sites: number of sites (>= 1).
        size_beta: Dirichlet concentration; small = very unequal sites, ``None``/``inf`` = equal sites.
        rng: the generator to draw from.
        min_fraction: floor on every site's fraction, so no site gets (almost) nothing; needs
            ``n_sites * min_fraction <= 1``.

    Returns:
        float array of length ``n_sites`` summing to 1.
    """
    if n_sites < 1:
        raise ValueError(f"`n_sites` must be >= 1, got {n_sites}")
    _check_positive("size_beta", size_beta)
    if not (min_fraction >= 0.0 and n_sites * min_fraction <= 1.0):
        raise ValueError(f"`min_fraction` must be in [0, 1/n_sites] = [0, {1 / n_sites:.4g}], got {min_fraction}")
    if _is_iid(size_beta):
        return np.full(n_sites, 1.0 / n_sites)
    draw = rng.dirichlet(np.full(n_sites, float(size_beta)))
    draw = np.nan_to_num(draw, nan=0.0)
    draw = draw / draw.sum() if draw.sum() > 0 else np.full(n_sites, 1.0 / n_sites)
    return min_fraction + (1.0 - n_sites * min_fraction) * draw


def _site_counts(n: int, n_sites: int, site_sizes, min_per_site: int) -> np.ndarray:
    """Integer site sizes summing to ``n`` with every site >= ``min_per_site`` (largest-remainder rounding)."""
    if n < n_sites * min_per_site:
        raise ValueError(f"cannot give {n_sites} sites >= {min_per_site} samples each from only {n} samples")
    if site_sizes is None:
        target = np.full(n_sites, n / n_sites)
    else:
        sizes = np.asarray(site_sizes)
        if sizes.shape != (n_sites,):
            raise ValueError(f"`site_sizes` must have length n_sites={n_sites}, got shape {sizes.shape}")
        if np.any(sizes < 0) or not np.all(np.isfinite(sizes)) or sizes.sum() <= 0:
            raise ValueError(f"`site_sizes` must be finite, >= 0 and not all zero, got {sizes.tolist()}")
        if np.issubdtype(sizes.dtype, np.integer):
            if sizes.sum() != n:
                raise ValueError(f"integer `site_sizes` must sum to the number of samples {n}, got {sizes.sum()}")
            target = sizes.astype(float)
        else:
            target = sizes / sizes.sum() * n
    counts = np.floor(target).astype(np.int64)
    order = np.argsort(-(target - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    # lift starved sites by taking from the largest ones
    while (short := np.flatnonzero(counts < min_per_site)).size:
        donor = int(np.argmax(counts))
        counts[short[0]] += 1
        counts[donor] -= 1
    return counts


def _fit_margins(start: np.ndarray, rows: np.ndarray, cols: np.ndarray, iters: int = 2000) -> np.ndarray:
    """Iterative proportional fitting of a positive matrix to the given row and column sums."""
    m = start.copy()
    for _ in range(iters):
        m *= (rows / m.sum(axis=1))[:, None]
        m *= (cols / m.sum(axis=0))[None, :]
        if np.abs(m.sum(axis=1) - rows).max() < 1e-6:
            break
    return m


def _round_margins(m: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Integer matrix with exactly the given margins, close to ``m`` (floor, then largest fractions first)."""
    out = np.floor(m).astype(np.int64)
    row_left = rows - out.sum(axis=1)
    col_left = cols - out.sum(axis=0)
    frac = m - out
    for flat in np.argsort(-frac, axis=None, kind="stable"):
        s, c = divmod(int(flat), m.shape[1])
        if row_left[s] > 0 and col_left[c] > 0:
            out[s, c] += 1
            row_left[s] -= 1
            col_left[c] -= 1
    # any remaining deficit (float drift) can go in any cell of a short row x short column
    for s in np.flatnonzero(row_left > 0):
        for c in np.flatnonzero(col_left > 0):
            take = min(row_left[s], col_left[c])
            out[s, c] += take
            row_left[s] -= take
            col_left[c] -= take
    return out


def dirichlet_label_skew(
    primary: np.ndarray | Sequence[int],
    n_sites: int,
    alpha: float | None,
    rng: np.random.Generator,
    *,
    site_sizes: np.ndarray | Sequence[float] | None = None,
    min_per_site: int = 1,
) -> np.ndarray:
    """Assign each sample to a site so that site class mixes follow ``Dirichlet(alpha * pooled_mix)``.

    Args:
        primary: one integer class per sample (see :func:`primary_class`).
        n_sites: number of sites.
        alpha: label-skew concentration (> 0); small = strong skew, ``None``/``inf`` = IID.
        rng: the generator to draw from.
        site_sizes: float fractions (normalised) or integer counts summing to ``len(primary)``; default equal.
        min_per_site: every site gets at least this many samples.

    Returns:
        int array of site indices in ``[0, n_sites)``, one per sample; site sizes match ``site_sizes`` exactly
        (after rounding and the ``min_per_site`` floor).
    """
    labels = np.asarray(primary)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"`primary` must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if n_sites < 1:
        raise ValueError(f"`n_sites` must be >= 1, got {n_sites}")
    if min_per_site < 0:
        raise ValueError(f"`min_per_site` must be >= 0, got {min_per_site}")
    _check_positive("alpha", alpha)
    n = labels.size
    counts = _site_counts(n, n_sites, site_sizes, min_per_site)
    site_of = np.empty(n, dtype=np.int64)
    if _is_iid(alpha):
        site_of[rng.permutation(n)] = np.repeat(np.arange(n_sites), counts)
        return site_of
    classes, inverse = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(inverse, minlength=classes.size)
    pooled = class_counts / n
    mixes = rng.dirichlet(np.maximum(alpha * pooled, 1e-6), size=n_sites)
    mixes = np.nan_to_num(mixes, nan=0.0) + 1e-9  # keep IPF on a strictly positive matrix
    fitted = _fit_margins(counts[:, None] * mixes, counts.astype(float), class_counts.astype(float))
    table = _round_margins(fitted, counts, class_counts)
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(inverse == c))
        site_of[members] = np.repeat(np.arange(n_sites), table[:, c])
    return site_of


def assign_splits(
    n: int,
    rng: np.random.Generator,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    stratify: np.ndarray | Sequence | None = None,
) -> np.ndarray:
    """Split names (``train``/``val``/``test``) for ``n`` samples, with exact rounded totals.

    Stratification spreads each stratum evenly: samples get a key ``(rank within stratum + U(0,1)) / stratum size``
    and the lowest keys become test, then val; so every stratum lands in each split at close to the global rate.

    Args:
        n: number of samples.
        rng: the generator to draw from.
        val_fraction: fraction for ``val`` (rounded to a count).
        test_fraction: fraction for ``test`` (rounded to a count).
        stratify: optional per-sample stratum (e.g. the primary class).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= value < 1.0):
            raise ValueError(f"`{name}` must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"`val_fraction` + `test_fraction` must be < 1, got {val_fraction} + {test_fraction}")
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}")
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if stratify is None:
        key = rng.permutation(n).astype(float)
    else:
        strata = np.asarray(stratify)
        if strata.shape != (n,):
            raise ValueError(f"`stratify` must have one entry per sample ({n}), got shape {strata.shape}")
        _, inverse = np.unique(strata, return_inverse=True)
        key = np.empty(n)
        for s in range(inverse.max() + 1 if n else 0):
            idx = np.flatnonzero(inverse == s)
            key[rng.permutation(idx)] = (np.arange(idx.size) + rng.random(idx.size)) / idx.size
    order = np.argsort(key, kind="stable")
    out = np.full(n, "train", dtype=object)
    out[order[:n_test]] = "test"
    out[order[n_test : n_test + n_val]] = "val"
    return out


def class_mix_distance(primary: np.ndarray | Sequence[int], site_of: np.ndarray | Sequence[int]) -> float:
    """Mean total-variation distance of each site's class mix from the pooled mix (0 = IID, near 1 = disjoint)."""
    labels = np.asarray(primary)
    sites = np.asarray(site_of)
    _, inverse = np.unique(labels, return_inverse=True)
    pooled = np.bincount(inverse) / labels.size
    dists = []
    for s in np.unique(sites):
        mix = np.bincount(inverse[sites == s], minlength=pooled.size) / np.sum(sites == s)
        dists.append(0.5 * np.abs(mix - pooled).sum())
    return float(np.mean(dists))


def partition_manifest(
    manifest: Manifest,
    n_sites: int,
    *,
    alpha: float | None,
    size_beta: float | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    site_prefix: str = "site-",
    min_fraction: float = 0.0,
    min_per_site: int = 1,
) -> Manifest:
    """Re-assign the site and split of every record to simulate a federation from pooled data.

    Splits are drawn within each site, stratified by primary class, so each site has its own train/val/test.
    The ``no_finding`` column (if present) is ignored when choosing a sample's primary class.

    Args:
        manifest: the pooled data (its current sites and splits are discarded).
        n_sites: number of sites; they are named ``f"{site_prefix}{i}"`` for ``i = 1..n_sites``.
        alpha: label-skew concentration, see :func:`dirichlet_label_skew` (``None``/``inf`` = IID).
        size_beta: size-imbalance concentration, see :func:`size_proportions` (``None`` = equal sizes).
        val_fraction: fraction of each site's rows in ``val``.
        test_fraction: fraction of each site's rows in ``test``.
        seed: seeds ``np.random.default_rng``; the same seed gives the same partition.
        site_prefix: prefix of the generated site names.
        min_fraction: floor on a site's share of the data when ``size_beta`` is set.
        min_per_site: minimum number of rows per site.

    Returns:
        A new :class:`Manifest` with the same records (same order), new ``site`` and ``split``.

    Raises:
        ValueError: a bad argument (named), or a site that would end up with no ``train`` row (named).
    """
    if len(manifest) == 0:
        raise ValueError("`manifest` has no records to partition")
    rng = np.random.default_rng(seed)
    findings = list(manifest.findings)
    ignore = [findings.index("no_finding")] if "no_finding" in findings else []
    matrix = np.asarray(manifest.label_matrix(), dtype=np.int64).reshape(len(manifest), len(findings))
    primary = primary_class(matrix, ignore=ignore)
    sizes = size_proportions(n_sites, size_beta, rng, min_fraction)
    site_of = dirichlet_label_skew(primary, n_sites, alpha, rng, site_sizes=sizes, min_per_site=min_per_site)
    splits = np.empty(len(manifest), dtype=object)
    for s in range(n_sites):
        idx = np.flatnonzero(site_of == s)
        splits[idx] = assign_splits(idx.size, rng, val_fraction, test_fraction, stratify=primary[idx])
        if not np.any(splits[idx] == "train"):
            raise ValueError(
                f"site '{site_prefix}{s + 1}' gets {idx.size} row(s) and none in 'train' "
                f"(val_fraction={val_fraction}, test_fraction={test_fraction}); "
                "use fewer sites, a larger min_per_site/min_fraction or smaller split fractions"
            )
    records = [
        replace(r, site=f"{site_prefix}{int(site_of[i]) + 1}", split=str(splits[i]))
        for i, r in enumerate(manifest.records)
    ]
    return Manifest(records, manifest.findings, manifest.path)


def deal_iid(manifest: Manifest, seed: int, splits: Sequence[str] = ("train", "val")) -> Manifest:
    """The IID control of a federation: the SAME rows, dealt over the SAME sites at random.

    Within each of ``splits`` the site column is permuted across rows, so every site keeps its number of train and
    val rows but draws them uniformly from all sites' pools; rows of any other split (the test sets, test-only
    sites) are untouched, so the heterogeneous run and its IID control are evaluated on identical test sets.

    Returns:
        A new :class:`Manifest` with the same records in the same order.
    """
    rng = np.random.default_rng(seed)
    records = list(manifest.records)
    for split in splits:
        idx = [i for i, r in enumerate(records) if r.split == split]
        sites = [records[i].site for i in idx]
        for i, site in zip(idx, rng.permutation(np.array(sites, dtype=object)) if idx else []):
            records[i] = replace(records[i], site=str(site))
    return Manifest(records, manifest.findings, manifest.path)
