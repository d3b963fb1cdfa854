"""The one optimizer step: a non-finite loss stops before any update, naming the loop and the step; gradients are
clipped to train.grad_clip (their norm logged); the forward runs under train.amp's autocast; the scheduler steps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flare_vlp.config import TrainConfig
from flare_vlp.training.schedule import build_scheduler
from flare_vlp.training.step import optimizer_step


def _setup(**train):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=1.0)
    return model, params, optimizer, dataclasses.replace(TrainConfig(), **train)


def test_a_non_finite_loss_stops_before_any_update_naming_the_loop_and_step():
    model, params, optimizer, cfg = _setup()
    before = [p.detach().clone() for p in params]

    def forward():
        return model(torch.full((2, 4), float("nan"))).sum(), {"bce": float("nan")}

    with pytest.raises(FloatingPointError, match=r"^site 'site-1' regulariser: non-finite loss nan at step 7; logs"):
        optimizer_step(forward, params=params, optimizer=optimizer, cfg=cfg, device="cpu", step=7,
                       where="site 'site-1' regulariser: ")  # fmt: skip
    assert all(torch.equal(p, b) for p, b in zip(params, before)) and all(p.grad is None for p in params)


@pytest.mark.parametrize("clip", [0.5, None])
def test_gradients_are_clipped_to_grad_clip_and_the_norm_is_logged(clip):
    model, params, optimizer, cfg = _setup(grad_clip=clip)
    x = torch.ones(2, 4)
    start = [p.detach().clone() for p in params]
    loss, logs = optimizer_step(lambda: ((100 * model(x)).sum(), {}), params=params, optimizer=optimizer, cfg=cfg,
                                device="cpu", step=0)  # fmt: skip
    raw = torch.cat([(100 * torch.ones(3, 1) * torch.ones(1, 4) * 2).flatten(), torch.full((3,), 200.0)]).norm()
    step = torch.cat([(b - p.detach()).flatten() for p, b in zip(params, start)]).norm()  # lr 1: the applied grad
    if clip is None:
        assert "grad_norm" not in logs and float(step) == pytest.approx(float(raw), rel=1e-5)
    else:
        assert logs["grad_norm"] == pytest.approx(float(raw), rel=1e-5)
        assert float(step) == pytest.approx(clip, rel=1e-4)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("auto", torch.float32), ("off", torch.float32)])
def test_the_forward_runs_under_the_configured_autocast_and_the_scheduler_steps(amp, dtype):
    model, params, optimizer, cfg = _setup(amp=amp)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=5)
    seen = {}

    def forward():
        out = model(torch.ones(2, 4))
        seen["dtype"] = out.dtype
        return out.float().sum(), {}

    optimizer_step(forward, params=params, optimizer=optimizer, cfg=cfg, device="cpu", step=0, scheduler=scheduler)
    assert seen["dtype"] == dtype  # auto: bf16 on a GPU only
    assert scheduler.last_epoch == 1 and scheduler.get_last_lr()[0] == pytest.approx(2 / 5)
