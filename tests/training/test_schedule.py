import math

import pytest

from flare_vlp.training.schedule import lr_multiplier


def test_warmup_then_cosine_to_floor():
    total, warm = 100, 10
    assert lr_multiplier(0, total, warm) == pytest.approx(0.1)
    assert lr_multiplier(9, total, warm) == pytest.approx(1.0)
    assert lr_multiplier(10, total, warm, min_ratio=0.1) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_multiplier(mid, total, warm, min_ratio=0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(100, total, warm, min_ratio=0.1) == pytest.approx(0.1)


def test_constant_and_unknown():
    assert lr_multiplier(50, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_multiplier(50, 100, 0, "linear")
