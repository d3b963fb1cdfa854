"""The frozen-trunk feature cache: exact reuse, and never a stale entry (other image, trunk, split or file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flare_vlp.config import ConfigError, load_config
from flare_vlp.experiments.builders import validate_config
from flare_vlp.models.efficientnet_lite import EfficientNetLite0Encoder
from flare_vlp.models.feature_cache import FeatureCache, content_key, fingerprint_tensors


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(0))


def _encoder(k: int, **kw) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(image_size=64, frozen_blocks=k, **kw).eval()


def test_cached_uncached_and_full_forward_agree(images):
    full = EfficientNetLite0Encoder(image_size=64).eval()
    cached, uncached = _encoder(7), _encoder(7, feature_cache=False)
    with torch.no_grad():
        ref = full(images)
        first = cached(images)  # fills the cache
        second = cached(images[[3, 0, 5]])  # every row read back from the cache, in another order
        plain = uncached(images)
    assert cached.cache.hits >= 3
    torch.testing.assert_close(first, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(second, first[[3, 0, 5]], rtol=1e-4, atol=1e-5)


def test_an_entry_does_not_depend_on_what_was_missing_with_it(images):
    """Two caches of one trunk filled in different histories (all six images missing at once; one, then the other
    five) hold the same features to the bit: each entry is computed alone, so a run's features, and its results,
    do not depend on which runs filled a shared cache before it (same process, same code path: exact)."""
    trunk = _encoder(7).trunk
    at_once, piecewise = FeatureCache("a"), FeatureCache("b")
    with torch.no_grad():
        together = at_once(trunk, images)
        piecewise(trunk, images[[5]])
        apart = piecewise(trunk, images)
    assert piecewise.hits == 1 and piecewise.misses == 6
    assert torch.equal(together, apart)


def test_trunk_is_not_a_parameter_and_upper_blocks_train(images):
    enc = _encoder(7).train()
    keys = enc.state_dict().keys()
    assert not any(k.startswith(("net._conv_stem", "net._bn0", "net._blocks.0.", "net._blocks.5.")) for k in keys)
    assert any(k.startswith("net._blocks.6.") for k in keys) and "net._conv_head.weight" in keys
    assert len(enc.blocks()) == 2  # stage 6 and the conv head
    before = {k: v.clone() for k, v in enc.trunk.state_dict().items()}
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    enc(images).square().mean().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in enc.trunk.state_dict().items())  # eval mode: BN stats fixed too
    assert enc.net._conv_head.weight.grad is not None


def test_changed_image_trunk_or_split_never_hits(images):
    enc = _encoder(7)
    with torch.no_grad():
        enc(images)
        changed = images.clone()
        changed[0, 0, 10, 10] += 0.25
        misses = enc.cache.misses
        enc(changed[:1])
    assert enc.cache.misses == misses + 1  # one changed pixel: a new key
    assert content_key(changed[0]) != content_key(images[0])
    other_split = _encoder(6)
    assert other_split.cache.fingerprint != enc.cache.fingerprint
    other_trunk = EfficientNetLite0Encoder(image_size=64, frozen_blocks=7, pretrained=False).eval()
    assert other_trunk.cache.fingerprint != enc.cache.fingerprint
    assert len(other_trunk.cache) == 0


def test_fingerprint_covers_tensor_values():
    a = [("w", torch.zeros(3))]
    b = [("w", torch.tensor([0.0, 0.0, 1e-6]))]
    assert fingerprint_tensors(a, 1) != fingerprint_tensors(b, 1)
    assert fingerprint_tensors(a, 1) != fingerprint_tensors(a, 2)


def test_disk_cache_is_shared_and_a_corrupt_entry_is_recomputed(tmp_path, images):
    calls = []

    def fn(x):
        calls.append(len(x))
        return x.mean(dim=(1, 2, 3), keepdim=False)[:, None] * torch.ones(1, 4)

    fp = "test-disk-" + tmp_path.name
    first = FeatureCache(fp, directory=tmp_path)
    out = first(fn, images)
    files = sorted((tmp_path / fp).glob("*.npy"))
    assert len(files) == len(images) and calls == [1] * 6  # each new entry computed alone
    first.clear()  # a new process: the in-memory table is empty, the disk copy is not
    files[0].write_bytes(b"not a numpy file")
    again = FeatureCache(fp, directory=tmp_path)
    torch.testing.assert_close(again(fn, images), out)
    assert calls == [1] * 7  # only the corrupt entry was recomputed
    np.load(files[0])  # and rewritten readable


def test_overflow_is_an_error_that_names_augmentation(images):
    cache = FeatureCache("test-overflow", max_entries=3)
    with pytest.raises(RuntimeError, match="augment"):
        cache(lambda x: x.flatten(1), images)


def test_config_refuses_augmentation_before_a_cached_trunk():
    overrides = {"data": {"augment": True}, "model": {"image_encoder": "efficientnet_lite0",
                                                      "image_kwargs": {"frozen_blocks": 7}}}  # fmt: skip
    with pytest.raises(ConfigError, match="data.augment"):
        validate_config(load_config("tiny", overrides))
    overrides["data"]["augment"] = False
    validate_config(load_config("tiny", overrides))
