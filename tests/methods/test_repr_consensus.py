"""The representation-exchange stand-in (two site roles, two architectures): only public-set representations leave
a site, the server's consensus is the per-sample mean, personal models live in the site store across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from method_helpers import PUBLIC, recorded_replies

from flare_vlp.config import load_config
from flare_vlp.fl.persistor import MODEL_FILE, read_checkpoint
from flare_vlp.methods.messages import Message, Representations
from flare_vlp.methods.registry import method_config
from flare_vlp.methods.repr_consensus.strategy import ReprConsensusStrategy
from flare_vlp.methods.runner import run_in_process
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.methods.strategy import ServerContext
from flare_vlp.training.schedule import lr_multiplier

ROLES = {"site-1": "image_text", "site-2": "image"}
ROLE_SETTINGS = {"image": {"config_overrides": {"model": {"image_encoder": "vit_tiny"}}}}
SETTINGS = {"public_samples": 16, "kd_steps": 1}


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _strategy(public_data_dir, **settings) -> ReprConsensusStrategy:
    strategy = ReprConsensusStrategy(method_config("repr_consensus", {**SETTINGS, **settings}))
    cfg = load_config("tiny", PUBLIC)
    strategy.initialize(ServerContext(cfg, 2, 1, data_dir=str(public_data_dir)))
    return strategy


def test_consensus_is_the_mean_and_an_absent_modality_keeps_its_bank(public_data_dir):
    strategy = _strategy(public_data_dir)
    task = strategy.round_tasks(0)[0]
    ids = strategy.task_message(task, "site-1").representations.ids
    assert len(ids) == 16 and not strategy.task_message(task, "site-1").representations.arrays  # no consensus yet
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(16, 32)).astype(np.float32) for _ in range(2))
    replies = {
        "site-1": Message(representations=Representations(ids, {"image": a, "text": b})),
        "site-2": Message(representations=Representations(ids, {"image": b})),
    }
    for site, reply in replies.items():
        assert strategy.accept(task, site, reply) is None
    info = strategy.aggregate(task).info
    assert info["modalities"] == {"image": ["site-1", "site-2"], "text": ["site-1"]}
    nxt = strategy.round_tasks(1)[0]
    ids1 = strategy.task_message(nxt, "x").representations.ids
    sent = strategy.task_message(nxt, "x").representations.arrays
    assert ids1 == ids  # the same public subset every round: round 0's consensus is round 1's target
    np.testing.assert_allclose(sent["image"], (a.astype(np.float64) + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(sent["text"], b, rtol=1e-6)
    # a round where no site sends text: the image bank moves, the text bank is kept
    strategy.accept(
        nxt, "site-2", Message(representations=Representations(ids1, {"image": np.zeros((16, 32), np.float32)}))
    )
    strategy.aggregate(nxt)
    state = strategy.state()
    assert all(v == [0.0] * 32 for v in (state["image"][i] for i in ids1))
    assert set(state["text"]) == set(ids)


@pytest.mark.parametrize(
    ("arrays", "ids_slice", "says"),
    [
        ({"image": np.zeros((16, 8), np.float32)}, slice(None), "shape"),
        ({"image": np.full((16, 32), np.nan, np.float32)}, slice(None), "non-finite"),
        ({"audio": np.zeros((16, 32), np.float32)}, slice(None), "unknown modality"),
        ({"image": np.zeros((15, 32), np.float32)}, slice(1, None), "ids differ"),
    ],
)
def test_bad_representations_are_refused_with_the_reason(public_data_dir, arrays, ids_slice, says):
    strategy = _strategy(public_data_dir)
    task = strategy.round_tasks(0)[0]
    ids = strategy.task_message(task, "s").representations.ids[ids_slice]
    reason = strategy.accept(task, "site-9", Message(representations=Representations(ids, arrays)))
    assert reason is not None and says in reason and "site-9" in reason


def test_empty_public_split_is_an_error(tiny_data_dir):
    """``tiny`` has no public split: the server refuses to start, naming the manifest and the setting."""
    strategy = ReprConsensusStrategy(method_config("repr_consensus", SETTINGS))
    with pytest.raises(ValueError, match="no public split.*public_samples"):
        strategy.initialize(ServerContext(load_config("tiny"), 1, 1, data_dir=str(tiny_data_dir)))


@pytest.mark.slow
def test_only_public_representations_leave_and_the_personal_model_stays(tmp_path, public_data_dir):
    """In process: every reply the server gets is checked here; the stores hold models of two architectures."""
    with recorded_replies(ReprConsensusStrategy) as seen:
        run = run_in_process(
            "repr_consensus", sites=list(ROLES), run_dir=tmp_path / "run", config="tiny", config_overrides=PUBLIC,
            method_settings=SETTINGS, num_rounds=2, data_dir=public_data_dir, local_steps=1, roles=ROLES,
            role_settings=ROLE_SETTINGS,
        )  # fmt: skip
    assert len(seen) == 4 and run.global_weights() == {}
    public = set(run.algos["site-1"]._public.ids)
    for site, reply in seen:
        assert not reply.weights and not reply.adapters
        assert set(reply.representations.ids) <= public
        assert set(reply.representations.arrays) == ({"image", "text"} if ROLES[site] == "image_text" else {"image"})
    stores = {site: SiteStore(tmp_path / "run" / "stores" / site, site) for site in ROLES}
    keys = {site: set(store.load("model", {})[0]) for site, store in stores.items()}
    assert keys["site-1"] != keys["site-2"], "the two roles must run different image encoders"
    for site in ROLES:
        assert keys[site] <= run.algos[site].declaration().private_keys
    events = _events(tmp_path / "run")
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1]
    # the private steps follow one lr warmup + decay across the run (train.federated_schedule: run), as at every
    # VLP site: round 0 ends above the floor, the last round at it (a fresh schedule per round would end both there)
    train = load_config("tiny", PUBLIC).train
    floor, first = (
        train.lr * train.min_lr_ratio,
        train.lr * lr_multiplier(1, 2, int(train.warmup_fraction * 2), train.schedule, train.min_lr_ratio),
    )
    lrs = {(e["site"], e["round"]): e["lr"] for e in events if e["event"] == "site" and "lr" in e}
    for site in ROLES:
        assert lrs[(site, 0)] == pytest.approx(first, rel=1e-5) and first > 2 * floor
        assert lrs[(site, 1)] == pytest.approx(floor, rel=1e-5)


@pytest.mark.slow
def test_flare_simulator_roles_and_personal_state_across_a_job_restart(tmp_path, public_data_dir):
    """Two FLARE jobs in the simulator: the second resumes the first; each site's model comes back from its store."""
    from nvflare.recipe import SimEnv

    from flare_vlp.recipes import MethodRecipe

    def job(name: str, rounds: int, resume_from=None):
        recipe = MethodRecipe(
            method="repr_consensus", name="repr_vlp", method_config=SETTINGS, config="tiny", config_overrides=PUBLIC,
            num_rounds=rounds, min_clients=2, data_dir=public_data_dir, local_steps=1, run_dir=tmp_path / name,
            roles=ROLES, role_settings=ROLE_SETTINGS, store_dir=str(tmp_path / "stores" / "{site}"), num_threads=1,
            resume_from=resume_from,
        )  # fmt: skip
        result = recipe.run(SimEnv(clients=list(ROLES), workspace_root=str(tmp_path / f"ws-{name}"))).get_result()
        return Path(result)

    first = job("first", 1)
    ckpt = read_checkpoint(first / "server" / "simulate_job" / "app_server" / MODEL_FILE)
    assert ckpt["round"] == 0 and ckpt["params"] == {} and len(ckpt["state"]["image"]) == 16
    (rnd,) = [e for e in _events(tmp_path / "first") if e["event"] == "round"]
    assert rnd["modalities"] == {"image": ["site-1", "site-2"], "text": ["site-1"]}
    roles = {e["site"]: e["role"] for e in _events(tmp_path / "first") if e["event"] == "site"}
    assert roles == ROLES
    second = job("second", 2, resume_from=first / "server" / "simulate_job" / "app_server" / MODEL_FILE)
    sites = [e for e in _events(tmp_path / "second") if e["event"] == "site"]
    assert {(e["site"], e["round"], e["rounds_done"]) for e in sites} == {("site-1", 1, 2), ("site-2", 1, 2)}
    for site in ROLES:
        assert "restored its model from the site store (1 rounds)" in (second / site / "log.txt").read_text()
    assert not list((second / "server").rglob("*.safetensors")), "no site model reaches the server"
