"""The training loop on real SynthCXR batches: it lowers the loss, respects freezing, FedProx and abort."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_dataset, build_loader, build_model, build_tokenizer
from flare_vlp.training import train_loop
from flare_vlp.training.loop import set_train_mode


@pytest.fixture(scope="module")
def setup(synth_small):
    cfg = load_config("tiny")
    tok = build_tokenizer(cfg.model)
    ds = build_dataset(synth_small.select(split="train"), cfg.data, train=True)
    loader = build_loader(ds, tok, batch_size=32, max_length=48, shuffle=True, seed=0)
    return cfg, loader


def _eval_loss(model, loader) -> float:
    from flare_vlp.training.objectives import ContrastiveObjective

    model.eval()
    with torch.no_grad():
        losses = [float(ContrastiveObjective("labels")(model, b)[0]) for b in loader]
    return sum(losses) / len(losses)


def test_loop_lowers_the_loss_on_synthcxr(setup):
    cfg, loader = setup
    model = build_model(cfg.model, seed=0)
    before = _eval_loss(model, loader)
    result = train_loop(model, loader, cfg.train, steps=80, seed=0)
    after = _eval_loss(model, loader)
    assert result.steps == 80 and result.samples == 80 * 32 and result.samples_per_s > 0
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < first - 0.3, (first, last)  # the training loss leaves the ln(32) = 3.47 plateau
    assert after < before, (before, after)  # and the eval-mode loss (BatchNorm running statistics) follows


def test_frozen_groups_do_not_change_and_frozen_towers_run_in_eval(setup):
    cfg, loader = setup
    model = build_model(dataclasses.replace(cfg.model, frozen=["text_encoder", "image_encoder"]), seed=0)
    frozen = {k: v.clone() for k, v in model.group_state_dict("text_encoder").items()}
    head = model.image_head.weight.detach().clone()
    set_train_mode(model)
    assert not model.text_encoder.training and model.image_head.training
    train_loop(model, loader, cfg.train, steps=3, seed=0)
    after = model.group_state_dict("text_encoder")
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert not torch.equal(head, model.image_head.weight)


def test_fedprox_term_pulls_towards_global(setup):
    cfg, loader = setup
    start = build_model(cfg.model, seed=0)
    global_params = {k: v.detach().clone() for k, v in start.named_parameters()}

    def drift(mu: float) -> float:
        model = build_model(cfg.model, seed=0)
        train_loop(model, loader, cfg.train, steps=8, seed=0, prox_mu=mu, global_params=global_params)
        return sum(float((p.detach() - global_params[n]).pow(2).sum()) for n, p in model.named_parameters())

    assert drift(50.0) < drift(0.0)
    with pytest.raises(ValueError, match="prox_mu > 0 needs global_params"):
        train_loop(build_model(cfg.model), loader, cfg.train, steps=1, prox_mu=1.0)
    with pytest.raises(ValueError, match="prox_mu must be >= 0"):
        train_loop(build_model(cfg.model), loader, cfg.train, steps=1, prox_mu=-0.5, global_params=global_params)


def test_abort_and_logging(setup):
    cfg, loader = setup
    calls, logs = {"n": 0}, []

    def should_abort() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    result = train_loop(
        build_model(cfg.model),
        loader,
        cfg.train,
        steps=10,
        should_abort=should_abort,
        on_log=lambda s, d: logs.append(s),
    )
    assert result.aborted and result.steps == 2 and logs == [0]


def test_seeded_runs_are_identical(synth_small):
    cfg = load_config("tiny")
    tok = build_tokenizer(cfg.model)
    ds = build_dataset(synth_small.select(split="train"), cfg.data, train=True)
    runs = []
    for _ in range(2):
        loader = build_loader(ds, tok, batch_size=32, max_length=48, shuffle=True, seed=3)
        runs.append(train_loop(build_model(cfg.model, seed=1), loader, cfg.train, steps=3, seed=1).losses)
    assert runs[0] == runs[1]


def test_everything_frozen_is_an_error(setup):
    cfg, loader = setup
    model = build_model(dataclasses.replace(cfg.model, frozen=["all"]))
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_loop(model, loader, cfg.train, steps=1)


def test_warm_frozen_schedule_unfreezes_on_time(setup):
    cfg, loader = setup
    model = build_model(cfg.model, seed=0)
    start = {k: v.clone() for k, v in model.group_state_dict("image_encoder").items() if v.is_floating_point()}
    head = model.image_head.weight.detach().clone()
    schedule = dataclasses.replace(cfg.train, warm_frozen={"image_encoder": 3}, bn_recalibration_batches=0)
    train_loop(model, loader, schedule, steps=3, seed=0)
    after = model.group_state_dict("image_encoder")
    frozen_keys = [k for k in start if "running" not in k]  # BatchNorm statistics still update in train mode
    assert all(torch.equal(start[k], after[k]) for k in frozen_keys)
    assert not torch.equal(head, model.image_head.weight)
    assert all(p.requires_grad for p in model.image_encoder.parameters())  # restored after the call
    model = build_model(cfg.model, seed=0)
    train_loop(model, loader, dataclasses.replace(schedule, warm_frozen={"image_encoder": 2}), steps=3, seed=0)
    assert any(not torch.equal(start[k], model.group_state_dict("image_encoder")[k]) for k in frozen_keys)
    assert all(p.requires_grad for p in model.image_encoder.parameters())


def test_warm_frozen_counts_steps_of_the_schedule_window(setup):
    """A federated round at run step 1 keeps a group frozen for the 3 - 1 = 2 steps left; at run step 3 not at all."""
    cfg, loader = setup
    schedule = dataclasses.replace(cfg.train, warm_frozen={"image_encoder": 3}, bn_recalibration_batches=0)

    def encoder_changed(window: tuple[int, int], steps: int) -> bool:
        model = build_model(cfg.model, seed=0)
        start = {k: v.clone() for k, v in model.group_state_dict("image_encoder").items() if "running" not in k}
        train_loop(model, loader, schedule, steps=steps, seed=0, schedule_window=window)
        after = model.group_state_dict("image_encoder")
        assert all(p.requires_grad for p in model.image_encoder.parameters())
        return any(not torch.equal(v, after[k]) for k, v in start.items() if v.is_floating_point())

    assert not encoder_changed((1, 10), steps=2)
    assert encoder_changed((1, 10), steps=3)
    assert encoder_changed((3, 10), steps=1)


def test_batchnorm_reestimation_reads_at_most_one_pass_of_the_loader(setup):
    cfg, loader = setup
    model = build_model(cfg.model, seed=0)
    batches = [b for _, b in zip(range(2), loader)]

    class Counting:
        """Two batches, counting every batch handed out."""

        served = 0

        def __len__(self):
            return len(batches)

        def __iter__(self):
            for b in batches:
                Counting.served += 1
                yield b

    train = dataclasses.replace(cfg.train, bn_recalibration_batches=16)
    train_loop(model, Counting(), train, steps=3, seed=0)
    assert Counting.served == 3 + 2  # 3 steps, then one pass (2 batches) for the statistics, not 16


def test_train_loop_rejects_a_bad_schedule_window():
    import torch

    from flare_vlp.config import TrainConfig
    from flare_vlp.training import train_loop

    with pytest.raises(ValueError, match="schedule_window must be"):
        train_loop(torch.nn.Linear(2, 2), [{}], TrainConfig(), steps=1, schedule_window=(-1, 10))
