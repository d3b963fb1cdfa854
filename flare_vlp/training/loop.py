"""The one local training loop: steps or epochs, AdamW, warmup + cosine, grad clipping, a proximal term, bf16 on GPU.

Used by the centralized and local-only baselines and by every FLARE executor, so a federated run and a centralized
run differ only in who aggregates. Reports loss and samples/s; honours an abort callback between steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from flare_vlp.algorithms import proximal_term
from flare_vlp.config import TrainConfig
from flare_vlp.training.objectives import ContrastiveObjective, Objective, batch_to_device
from flare_vlp.training.schedule import build_scheduler
from flare_vlp.training.step import autocast, optimizer_step

__all__ = ["TrainResult", "train_loop", "resolve_steps", "set_train_mode", "recalibrate_batchnorm"]


@dataclass
class TrainResult:
    """What a call of :func:`train_loop` did."""

    steps: int
    samples: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    aborted: bool = False
    last_logs: dict[str, float] = field(default_factory=dict)

    @property
    def mean_loss(self) -> float:
        return float(sum(self.losses) / len(self.losses)) if self.losses else float("nan")

    @property
    def final_loss(self) -> float:
        """Mean over the last 10% of steps (at least one): less noisy than the last batch."""
        if not self.losses:
            return float("nan")
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(sum(tail) / len(tail))

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "steps": self.steps,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "mean_loss": self.mean_loss,
            "final_loss": self.final_loss,
            "samples_per_s": self.samples_per_s,
        }


def resolve_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of one call: ``cfg.steps`` if set, else ceil(epochs x batches per epoch)."""
    if cfg.steps is not None:
        return int(cfg.steps)
    if batches_per_epoch < 1:
        raise ValueError("the training loader yields no batch (fewer samples than one batch with drop_last?)")
    return max(1, math.ceil(cfg.epochs * batches_per_epoch))


def _cycle(loader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yields no batch")


def _warm_frozen(model: nn.Module, schedule: Mapping[str, int], offset: int = 0) -> dict[int, list[nn.Parameter]]:
    """Freeze each scheduled group now; return step of this call -> the parameters to unfreeze at that step.

    The schedule counts steps of the run: a call whose steps start at ``offset`` (a federated round, see
    ``schedule_window``) freezes a group only while ``offset + step`` is below the group's count, so a site does not
    re-freeze its encoder at the start of every round.
    Only parameters that are trainable when the loop starts take part (a group frozen by the config stays frozen).
    Warming up new heads on a frozen (e.g. pretrained) encoder before unfreezing it protects the encoder from the
    large, random gradients of the fresh heads.
    """
    if not schedule:
        return {}
    if not hasattr(model, "param_names"):
        raise ValueError("train.warm_frozen needs a model with named parameter groups (DualEncoder)")
    named = dict(model.named_parameters())
    thaw: dict[int, list[nn.Parameter]] = {}
    for group, steps in schedule.items():
        for name in model.param_names(group):
            param = named[name]
            if param.requires_grad and steps > offset:
                param.requires_grad_(False)
                thaw.setdefault(int(steps) - offset, []).append(param)
    return thaw


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, but sub-modules whose parameters are all frozen run in eval mode.

    A frozen tower must not apply dropout or update BatchNorm running statistics: it should be the same function
    in every step (and at every site), or the "frozen" text encoder silently drifts.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if module is not model and params and not any(p.requires_grad for p in params):
            module.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, forward: Callable[[dict], object], device: torch.device) -> int:
    """Recompute BatchNorm running statistics as exact averages over ``batches`` ("precise BN").

    The EMA statistics of a network that was still changing lag behind its weights; with a contrastive loss at high
    logit scale that lag alone cost a SynthCXR model 1.3 nats of eval-mode loss. Re-estimating them with the final
    weights (Wu & Johnson 2021, "Rethinking BatchNorm") fixes it for the cost of a few forward passes.
    Returns the number of batches used (0 when the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    used = 0
    for batch in batches:
        forward(batch_to_device(batch, device))
        used += 1
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return used


def train_loop(
    model: nn.Module,
    loader,
    cfg: TrainConfig,
    *,
    objective: Objective | None = None,
    device: torch.device | str = "cpu",
    steps: int | None = None,
    prox_mu: float = 0.0,
    global_params: Mapping[str, torch.Tensor] | None = None,
    seed: int | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
    schedule_window: tuple[int, int] | None = None,
) -> TrainResult:
    """Train the parameters of ``model`` that have ``requires_grad`` (freeze groups before calling).

    Args:
        model: the model; frozen parameters are left out of the optimizer.
        loader: an iterable of batches (dicts of tensors); cycled when the steps outlast one pass.
        cfg: optimizer, schedule, clipping and AMP settings.
        objective: the per-batch loss (default: :class:`ContrastiveObjective` with ``cfg.positives``).
        device: where to train.
        steps: optimizer steps of this call (default: from ``cfg.steps`` / ``cfg.epochs``).
        prox_mu: weight of the proximal term ``mu/2 ||w - w_global||^2`` (FedProx's local objective; 0 = off).
        global_params: the round's global weights ``w_global`` of the proximal term (needed when ``prox_mu > 0``).
        seed: seeds torch for dropout/augmentation randomness inside the model.
        on_log: called every ``cfg.log_every`` steps and at the end with (step, logs).
        should_abort: polled between steps; True stops the loop early (FLARE's abort signal).
        schedule_window: ``(offset, run_steps)``: this call's steps are steps ``offset ...`` of a schedule (warmup +
            decay) spanning ``run_steps``. A federated site passes its place in the whole run, so its lr follows one
            schedule across rounds like the centralized run's, instead of restarting the warmup and decay every round.
            ``train.warm_frozen`` counts steps of the same window.

    Returns:
        TrainResult with per-step losses, samples seen, wall seconds, and whether it was aborted.
    """
    device = torch.device(device)
    if seed is not None:
        torch.manual_seed(seed)
    objective = objective or ContrastiveObjective(cfg.positives)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter group is frozen")
    total = steps if steps is not None else resolve_steps(cfg, len(loader))
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    offset, run_steps = schedule_window or (0, total)
    if offset < 0 or run_steps < 1:
        raise ValueError(f"schedule_window must be (offset >= 0, run_steps >= 1), got {schedule_window}")
    thaw_at = _warm_frozen(model, cfg.warm_frozen, offset)
    warmup = int(cfg.warmup_fraction * run_steps)
    scheduler = build_scheduler(optimizer, run_steps, warmup, cfg.schedule, cfg.min_lr_ratio, start_step=offset)
    prox_ref = None
    if not (math.isfinite(prox_mu) and prox_mu >= 0):
        raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")
    if prox_mu > 0:
        if global_params is None:
            raise ValueError("prox_mu > 0 needs global_params (the round's global model)")
        prox_ref = {k: v.detach().to(device) for k, v in global_params.items()}
    model.to(device)
    set_train_mode(model)
    result = TrainResult(steps=0, samples=0, seconds=0.0)
    batches = _cycle(loader)
    t0 = time.perf_counter()
    for step in range(total):
        if should_abort is not None and should_abort():
            result.aborted = True
            break
        for param in thaw_at.pop(step, []):
            param.requires_grad_(True)
        batch = batch_to_device(next(batches), device)

        def forward(batch: dict = batch) -> tuple[torch.Tensor, dict[str, float]]:
            loss, logs = objective(model, batch)
            if prox_ref is not None:
                prox = proximal_term(model, prox_ref, prox_mu)
                loss = loss + prox
                logs["prox"] = float(prox.detach())
            return loss, logs

        loss, logs = optimizer_step(
            forward, params=params, optimizer=optimizer, cfg=cfg, device=device, step=step, scheduler=scheduler
        )
        result.steps += 1
        result.samples += int(batch["labels"].shape[0])  # report-only batches have no image
        result.losses.append(float(loss.detach()))
        logs.update(loss=result.losses[-1], lr=scheduler.get_last_lr()[0])
        result.last_logs = logs
        if on_log is not None and (step % max(1, cfg.log_every) == 0 or step == total - 1):
            on_log(step, dict(logs))
    for pending in thaw_at.values():  # a schedule longer than this call: leave the model as it was given
        for param in pending:
            param.requires_grad_(True)
    if cfg.bn_recalibration_batches and not result.aborted:
        # at most one pass over the data: more batches only repeat rows (a small FL site has fewer than 8)
        n_stats = min(cfg.bn_recalibration_batches, len(loader)) if hasattr(loader, "__len__") else None
        stats_batches = [next(batches) for _ in range(n_stats or cfg.bn_recalibration_batches)]
        with autocast(cfg, device):
            recalibrate_batchnorm(model, stats_batches, lambda b: objective(model, b), device)
    result.seconds = time.perf_counter() - t0
    return result
