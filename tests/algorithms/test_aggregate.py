"""Validated weighted averaging: hand-computed averages, numpy/torch, int buffers, every rejection path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flare_vlp.algorithms.aggregate import (
    UpdateValidationError,
    split_valid_updates,
    validate_update,
    weighted_average,
)


def _np_update(value: float, steps: int = 1) -> dict:
    return {
        "w": np.full((2, 2), value, dtype=np.float32),
        "b": np.array([value], dtype=np.float32),
        "bn.num_batches_tracked": np.array(steps, dtype=np.int64),
    }


def _torch_update(value: float, steps: int = 1) -> dict:
    return {key: torch.from_numpy(array) for key, array in _np_update(value, steps).items()}


@pytest.mark.parametrize("make", [_np_update, _torch_update])
def test_hand_computed_average_keeps_type_and_dtype(make):
    result = weighted_average({"a": make(1.0, 3), "b": make(4.0, 7)}, {"a": 2.0, "b": 1.0})
    assert list(result) == ["w", "b", "bn.num_batches_tracked"]
    expected_type = type(make(0.0)["w"])
    for value in result.values():
        assert isinstance(value, expected_type)
    assert result["w"].dtype == make(0.0)["w"].dtype
    np.testing.assert_allclose(np.asarray(result["w"]), np.full((2, 2), 2.0))
    assert int(result["bn.num_batches_tracked"]) == 3  # int buffers: copied from the first positive-weight update


def test_zero_weight_site_is_validated_but_ignored():
    result = weighted_average({"a": _np_update(5.0, 9), "b": _np_update(1.0, 2)}, {"a": 0.0, "b": 3.0})
    np.testing.assert_allclose(result["b"], [1.0])
    assert int(result["bn.num_batches_tracked"]) == 2
    bad = _np_update(1.0)
    bad["w"][0, 0] = np.nan
    with pytest.raises(UpdateValidationError, match="site 'a', key 'w'"):
        weighted_average({"a": bad, "b": _np_update(1.0)}, {"a": 0.0, "b": 1.0})


def test_float64_accumulation_and_reference_types():
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    single = {"w": torch.tensor([3.0, 4.0], dtype=torch.float32)}
    reference = {"w": np.zeros(2, dtype=np.float64)}
    result = weighted_average({"a": half, "b": single}, {"a": 1, "b": 1}, reference=reference)
    assert isinstance(result["w"], np.ndarray) and result["w"].dtype == np.float64
    np.testing.assert_array_equal(result["w"], [2.0, 3.0])
    rng = np.random.default_rng(0)
    sites = {f"s{i}": {"w": rng.normal(size=1000).astype(np.float32)} for i in range(5)}
    weights = {site: float(rng.random()) for site in sites}
    total = sum(weights.values())
    expected = sum((weights[s] / total) * sites[s]["w"].astype(np.float64) for s in sites).astype(np.float32)
    out = weighted_average(sites, weights)
    assert out["w"].dtype == np.float32 and np.array_equal(out["w"], expected)


def test_inputs_are_not_modified_and_output_is_a_copy():
    update = _torch_update(2.0)
    result = weighted_average({"a": update}, {"a": 1.0})
    result["w"] += 1
    result["bn.num_batches_tracked"] += 1
    assert torch.all(update["w"] == 2.0) and int(update["bn.num_batches_tracked"]) == 1


def _bad(kind: str) -> dict:
    update = _np_update(1.0)
    if kind == "missing":
        del update["b"]
    elif kind == "extra":
        update["lora_extra"] = np.zeros(1, dtype=np.float32)
    elif kind == "shape":
        update["w"] = np.zeros((2, 3), dtype=np.float32)
    elif kind == "dtype":
        update["w"] = np.zeros((2, 2), dtype=np.int32)
    elif kind == "inf":
        update["b"] = np.array([np.inf], dtype=np.float32)
    elif kind == "type":
        update["b"] = [1.0]
    return update


@pytest.mark.parametrize(
    ("kind", "key", "match"),
    [
        ("missing", "b", "site 'bad': update is missing 1 key\\(s\\): \\['b'\\]"),
        ("extra", "lora_extra", "site 'bad': update has unexpected 1 key\\(s\\): \\['lora_extra'\\]"),
        ("shape", "w", "site 'bad', key 'w': shape \\(2, 3\\) != expected \\(2, 2\\)"),
        ("dtype", "w", "site 'bad', key 'w': dtype int32 does not match expected float32"),
        ("inf", "b", "site 'bad', key 'b': 1 non-finite"),
        ("type", "b", "site 'bad', key 'b': expected a torch.Tensor or numpy.ndarray, got list"),
    ],
)
def test_each_invalid_update_names_site_and_key(kind, key, match):
    updates = {"good": _np_update(1.0), "bad": _bad(kind)}
    with pytest.raises(UpdateValidationError, match=match) as info:
        weighted_average(updates, {"good": 1.0, "bad": 1.0})
    assert info.value.site == "bad" and info.value.key == key
    assert isinstance(info.value, ValueError)
    with pytest.raises(UpdateValidationError, match=match):  # against an explicit reference too
        weighted_average({"bad": _bad(kind)}, {"bad": 1.0}, reference=_np_update(0.0))


def test_long_key_lists_are_truncated():
    reference = {f"k{i}": np.zeros(1) for i in range(10)}
    with pytest.raises(UpdateValidationError, match=r"missing 9 key\(s\): \['k1', 'k2', 'k3'\] \.\.\.") as info:
        validate_update("s", {"k0": np.zeros(1)}, reference)
    assert info.value.key == "k1"


@pytest.mark.parametrize(
    ("updates", "weights", "match", "site"),
    [
        ({}, {}, "no updates to average", None),
        ({"a": {}}, {"a": 1.0}, "site 'a': empty update", "a"),
        ({"a": _np_update(1.0)}, {"a": -1.0}, "site 'a': weight must be finite and >= 0, got -1.0", "a"),
        ({"a": _np_update(1.0)}, {"a": float("nan")}, "site 'a': weight must be finite", "a"),
        ({"a": _np_update(1.0)}, {"b": 1.0}, "site 'a': no weight given", "a"),
        ({"a": _np_update(1.0), "b": _np_update(2.0)}, {"a": 0.0, "b": 0.0}, "total weight is zero", None),
    ],
)
def test_weight_and_empty_errors(updates, weights, match, site):
    with pytest.raises(UpdateValidationError, match=match) as info:
        weighted_average(updates, weights)
    assert info.value.site == site


def test_split_valid_updates_excludes_bad_sites():
    updates = {"a": _np_update(1.0), "nan": _bad("inf"), "b": _np_update(3.0), "short": _bad("missing")}
    valid, rejected = split_valid_updates(updates, reference=_np_update(0.0))
    assert list(valid) == ["a", "b"] and set(rejected) == {"nan", "short"}
    assert rejected["nan"].key == "b" and rejected["short"].key == "b"
    np.testing.assert_allclose(weighted_average(valid, {"a": 1, "b": 1})["w"], 2.0)
    # without a reference the first self-consistent update becomes the reference
    valid, rejected = split_valid_updates({"nan": _bad("inf"), "a": _np_update(1.0), "short": _bad("missing")})
    assert list(valid) == ["a"] and set(rejected) == {"nan", "short"}
