"""ClientAlgoExecutor hosting the weights client algorithm (FedDRA's for its stage-1 task), called directly with
hand-built Shareables and a bare FLContext (no FLARE runtime needed); the outgoing declaration check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nvflare.apis.fl_constant import FLMetaKey, ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.fl.executor import ClientAlgoExecutor
from flare_vlp.methods.messages import Message, TaskMeta
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.tensors import exchanged_keys, to_numpy
from flare_vlp.methods.weights_client import WeightsClientAlgo

_STORES: list = []


@pytest.fixture(scope="module", autouse=True)
def _store_root(tmp_path_factory):
    """A bare FLContext has no workspace: the site stores of these executors go to a temporary folder."""
    _STORES.append(tmp_path_factory.mktemp("stores"))
    yield
    _STORES.pop()


def VLPExecutor(*, method="fedavg", data_dir=None, site_map=None, **fields) -> ClientAlgoExecutor:  # noqa: N802  (reads like the component it builds)
    """A ``method`` site executor of a run spec with ``fields`` (its stores in this module's temporary folder)."""
    data = DataSource(data_dir=data_dir, site_map=site_map)
    spec = RunSpec(method, store_dir=str(_STORES[-1] / "{site}"), data=data, **fields)
    return ClientAlgoExecutor(spec.to_dict())


FAST = {"train": {"bn_recalibration_batches": 1}}  # a tiny round in about a second


def _ctx(site: str) -> FLContext:
    ctx = FLContext()
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    return ctx


def _task(meta: dict | None = None, rnd: int = 0) -> Shareable:
    cfg = load_config("tiny", FAST)
    params = to_numpy(build_model(cfg.model, seed=cfg.seed).state_dict())
    model = FLModel(params_type=ParamsType.FULL, params=params, current_round=rnd, total_rounds=2, meta=meta or {})
    return FLModelUtils.to_shareable(model)


@pytest.fixture
def executor(tiny_data_dir):
    """A fresh FedAvg site executor for each test (a test trains, validates or patches its own: no state carried
    from one test to the next)."""
    return VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), local_steps=2, config_overrides=FAST, num_threads=1)


def test_train_returns_trained_groups_with_weight_and_metrics(executor):
    reply = executor.execute("train", _task(), _ctx("site-1"), Signal())
    assert reply.get_return_code() == ReturnCode.OK
    out = FLModelUtils.from_shareable(reply)
    cfg = load_config("tiny", FAST)
    assert sorted(out.params) == sorted(exchanged_keys(build_model(cfg.model), ["all"], cfg.model.frozen))
    assert all(isinstance(v, np.ndarray) for v in out.params.values())
    assert out.meta[FLMetaKey.NUM_STEPS_CURRENT_ROUND] == 2
    assert out.meta[TaskMeta.N_SAMPLES] > 0 and out.meta[TaskMeta.SITE] == "site-1"
    assert math.isfinite(out.metrics["train_loss"]) and math.isfinite(out.metrics["val_loss"])
    assert out.metrics["samples_per_s"] > 0


def test_train_sends_only_the_groups_asked_for_and_applies_prox(executor, tiny_data_dir):
    """FedProx's ``mu/2 ||w - w_global||^2`` is zero at the global weights, so the first of the 2 steps is the same
    with or without it; at the second it is > 0 and is exactly what the loss (``train_loss``: the last step's) gained
    over a twin site without it (same seed, data and first step), and it changes the trained weights."""
    groups = {TaskMeta.TRAINABLE_GROUPS: ["image_head", "temperature"]}
    mu = 10.0  # large enough that the term stands well above float32 rounding of a ~3.5 loss

    def train(ex: ClientAlgoExecutor, meta: dict) -> FLModel:
        reply = ex.execute("train", _task(meta, rnd=1), _ctx("site-1"), Signal())
        assert reply.get_return_code() == ReturnCode.OK
        return FLModelUtils.from_shareable(reply)

    out = train(executor, {**groups, TaskMeta.OPTIONS: {"prox_mu": mu}})
    plain = train(VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), local_steps=2, config_overrides=FAST,
                              num_threads=1), groups)  # fmt: skip
    assert out.params and all(k.startswith("image_head.") or k == "log_scale" for k in out.params), list(out.params)
    assert "prox" not in plain.metrics and out.metrics["prox"] > 0
    gained = out.metrics["train_loss"] - plain.metrics["train_loss"]
    assert gained == pytest.approx(out.metrics["prox"], rel=1e-3), (gained, out.metrics["prox"])
    assert not np.allclose(out.params["image_head.weight"], plain.params["image_head.weight"])


def test_validate_and_submit_model(executor):
    reply = executor.execute("validate", _task(), _ctx("site-1"), Signal())
    out = FLModelUtils.from_shareable(reply)
    assert out.metrics["n_val"] > 0 and math.isfinite(out.metrics["val_loss"])
    submitted = FLModelUtils.from_shareable(executor.execute("submit_model", Shareable(), _ctx("site-1"), Signal()))
    assert "log_scale" in submitted.params


def test_abort_and_unknown_task(executor, monkeypatch):
    aborted = Signal()
    aborted.trigger("test")
    assert executor.execute("train", _task(), _ctx("site-1"), aborted).get_return_code() == ReturnCode.TASK_ABORTED
    assert executor.execute("nope", _task(), _ctx("site-1"), Signal()).get_return_code() == ReturnCode.TASK_UNKNOWN
    reps = FLModelUtils.from_shareable(_task())
    reps.params["repr::image"] = np.zeros((2, 4), np.float32)  # a representation task sent to a weights site
    reps.meta[TaskMeta.REPR_IDS] = ["a", "b"]
    errors = []
    monkeypatch.setattr(executor, "log_exception", lambda ctx, msg: errors.append(msg))
    wrong = executor.execute("train", FLModelUtils.to_shareable(reps), _ctx("site-1"), Signal())
    assert wrong.get_return_code() == ReturnCode.EXECUTION_EXCEPTION and "does not read" in errors[-1], errors
    unknown_option = _task({TaskMeta.OPTIONS: {"mystery": 1}})
    assert executor.execute("train", unknown_option, _ctx("site-1"), Signal()).get_return_code() == (
        ReturnCode.EXECUTION_EXCEPTION
    )


def test_site_without_rows_is_an_error_reply_naming_the_site(tiny_data_dir):
    ex = VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), config_overrides=FAST)
    reply = ex.execute("train", _task(), _ctx("site-9"), Signal())
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
    assert "site-9" in ex._setup_error and "no train rows" in ex._setup_error
    with pytest.raises(ValueError, match="no site role 'nope'"):
        ClientAlgoExecutor(RunSpec("fedavg").to_dict(), role="nope")


def test_site_map_routes_a_flare_name_to_a_data_site(tiny_data_dir):
    ex = VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), site_map={"hospital-a": "site-2"}, local_steps=1)
    out = FLModelUtils.from_shareable(ex.execute("train", _task(), _ctx("hospital-a"), Signal()))
    assert out.meta[TaskMeta.SITE] == "site-2"


def test_bad_local_steps_fails_at_construction():
    with pytest.raises(ValueError, match="local_steps"):
        VLPExecutor(local_steps=0)


def test_frozen_text_tower_is_not_sent_back(tiny_data_dir):
    frozen = {**FAST, "model": {"frozen": ["text_encoder"]}}
    ex = VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), local_steps=1, config_overrides=frozen)
    task = FLModelUtils.from_shareable(_task())
    task.params = {k: v for k, v in task.params.items() if not k.startswith("text_encoder.")}
    out = FLModelUtils.from_shareable(ex.execute("train", FLModelUtils.to_shareable(task), _ctx("site-2"), Signal()))
    assert out.params and not any(k.startswith("text_encoder.") for k in out.params)


def test_feddra_stage1_task_sends_deep_groups_with_anchor_and_global_loss(tiny_data_dir):
    """The anchor loss is zero at the received global model, so the first of the 2 steps is the same with or without
    it; at the second it is > 0 and ``anchor_weight`` times it is exactly what the loss gained over a twin site
    without it (same seed, data and first step)."""
    weight = 100.0  # large enough that the term stands well above float32 rounding of the loss

    def stage1(options: dict) -> tuple[ClientAlgoExecutor, FLModel]:
        ex = VLPExecutor(method="feddra", config="tiny", data_dir=str(tiny_data_dir), local_steps=2,
                         config_overrides=FAST, num_threads=1)  # fmt: skip
        meta = {TaskMeta.TRAINABLE_GROUPS: ["deep"], TaskMeta.LOCAL_STEPS: 2, TaskMeta.OPTIONS: options}
        reply = ex.execute("train_deep", _task(meta), _ctx("site-1"), Signal())
        assert reply.get_return_code() == ReturnCode.OK
        return ex, FLModelUtils.from_shareable(reply)

    executor, out = stage1({"anchor_weight": weight})
    _, plain = stage1({})
    deep = exchanged_keys(executor.algo.data.model, ["deep"])
    assert sorted(out.params) == sorted(deep) and out.meta[TaskMeta.TRAINABLE_GROUPS] == ["deep"]
    assert out.metrics["steps"] == 2 and out.metrics["anchor"] > 0 and "anchor" not in plain.metrics
    gained = out.metrics["train_loss"] - plain.metrics["train_loss"]
    assert gained == pytest.approx(weight * out.metrics["anchor"], rel=1e-3), (gained, out.metrics["anchor"])
    assert math.isfinite(out.metrics["global_val_loss"]) and math.isfinite(out.metrics["val_loss"])


def test_a_task_the_algorithm_does_not_declare_is_unknown(executor):
    """Dispatch follows the algorithm's declared train tasks: a FedAvg site does not train FedDRA's stage 1."""
    reply = executor.execute("train_deep", _task(), _ctx("site-1"), Signal())
    assert reply.get_return_code() == ReturnCode.TASK_UNKNOWN


def test_lr_schedule_spans_the_run_not_the_round(tiny_data_dir):
    """Round r of R with S steps is window (r * S, R * S) of one schedule; ``federated_schedule: round`` restarts it.
    (Its own executors: one per schedule.)"""
    from flare_vlp.fl.exchange import task_from_flmodel

    task = task_from_flmodel("train", FLModelUtils.from_shareable(_task(rnd=1)))  # total_rounds 2
    for schedule, window in (("run", (3, 6)), ("round", None)):
        overrides = {"train": {**FAST["train"], "federated_schedule": schedule}}
        ex = VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), local_steps=1, config_overrides=overrides)
        assert ex.execute("train", _task(rnd=1), _ctx("site-1"), Signal()).get_return_code() == ReturnCode.OK
        assert ex.algo.schedule_window(task, 3) == window, schedule


class LeakyVLP(WeightsClientAlgo):
    """A VLP site that also puts a tensor it does not declare shareable (a 'personal head') into its reply."""

    def train(self, task, message, should_abort):
        reply = super().train(task, message, should_abort)
        reply.weights["personal_head.weight"] = np.zeros((2, 2), np.float32)
        return reply


class RawDataVLP(WeightsClientAlgo):
    """A VLP site that smuggles raw pixels out through meta."""

    def train(self, task, message, should_abort):
        reply = super().train(task, message, should_abort)
        reply.meta["pixels"] = np.ones(4)
        return reply


@pytest.mark.parametrize(("algo", "says"), [(LeakyVLP, "personal_head.weight"), (RawDataVLP, "meta['pixels']")])
def test_undeclared_tensor_never_leaves_the_site(tiny_data_dir, algo, says, monkeypatch):
    """The executor checks the reply against the algorithm's declaration: an error reply, nothing sent."""
    ex = VLPExecutor(config="tiny", data_dir=str(tiny_data_dir), local_steps=1, config_overrides=FAST, num_threads=1)
    spec = ex.algo  # None until set-up: swap the role's class for the leaky one
    assert spec is None
    from flare_vlp.methods.registry import MethodSpec

    monkeypatch.setattr(MethodSpec, "client_cls", lambda self, role="default": algo)
    errors = []
    monkeypatch.setattr(ex, "log_error", lambda ctx, msg: errors.append(msg))
    reply = ex.execute("train", _task(), _ctx("site-1"), Signal())
    assert reply.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
    assert "reply NOT sent" in errors[-1] and says in errors[-1], errors
    assert isinstance(Message().meta, dict)
