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


def test_scheduler_from_a_start_step_continues_one_schedule():
    """Two calls with windows (0, 10) and (5, 10) give the same lrs as one 10-step schedule (a site's two rounds)."""
    import torch

    from flare_vlp.training.schedule import build_scheduler

    def lrs(start: int, steps: int) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        sched = build_scheduler(opt, 10, 2, "cosine", 0.05, start_step=start)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs(0, 5) + lrs(5, 5) == pytest.approx(lrs(0, 10))
    assert lrs(0, 10) == pytest.approx([2.0 * lr_multiplier(i, 10, 2, "cosine", 0.05) for i in range(10)])
    assert lrs(12, 1) == pytest.approx([2.0 * 0.05])  # past the run's end: the floor
