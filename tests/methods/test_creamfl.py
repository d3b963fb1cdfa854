"""CreamFL on the platform: heterogeneous roles in one job, only public-set representations leave a site, the
server ensemble copes with absent client types, bad replies and bad set-ups get named errors, and the job runs in
the FLARE simulator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from method_helpers import CREAMFL, CREAMFL_ROLES, recorded_replies

from flare_vlp.cli import main
from flare_vlp.config import load_config, merge_overrides, preset_path
from flare_vlp.data.manifest import read_manifest
from flare_vlp.methods.client import SiteContext, seal_reply
from flare_vlp.methods.creamfl.client import CreamFLClient
from flare_vlp.methods.creamfl.strategy import CreamFLStrategy
from flare_vlp.methods.messages import Message, Representations, TaskMeta
from flare_vlp.methods.payload import DisclosureError
from flare_vlp.methods.registry import assign_roles, method_config
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.methods.strategy import ServerContext
from flare_vlp.training.objectives import ContrastiveObjective
from flare_vlp.training.schedule import lr_multiplier

SETTINGS = {"public_samples": 16}


def _strategy(data_dir, config_overrides=CREAMFL, rounds=2, **settings) -> CreamFLStrategy:
    strategy = CreamFLStrategy(method_config("creamfl", {**SETTINGS, **settings}))
    strategy.initialize(ServerContext(load_config("tiny", config_overrides), rounds, 1, data_dir=str(data_dir)))
    return strategy


def _reply(ids, role: str, dim: int = 32, seed: int = 0, **arrays) -> Message:
    rng = np.random.default_rng(seed)
    modalities = {"image": ["image"], "text": ["text"], "image_text": ["image", "text"]}[role]
    default = {m: rng.normal(size=(len(ids), dim)).astype(np.float32) for m in modalities}
    return Message(representations=Representations(list(ids), {**default, **arrays}), meta={TaskMeta.ROLE: role})


def test_a_round_with_one_client_type_distils_only_that_side(creamfl_data_dir):
    """Only image-only sites reply: the image side is ensembled and distilled, the text tower is left alone."""
    strategy = _strategy(creamfl_data_dir)
    task = strategy.round_tasks(0)[0]
    message = strategy.task_message(task, "site-2")
    ids = message.representations.ids
    assert len(ids) == 16 and set(message.representations.arrays) == {"image", "text"}
    text_head = {k: v.clone() for k, v in strategy.model.text_head.state_dict().items()}
    image_head = {k: v.clone() for k, v in strategy.model.image_head.state_dict().items()}
    for seed, site in enumerate(("site-2", "site-4")):
        assert strategy.accept(task, site, _reply(ids, "image", seed=seed)) is None
    info = strategy.aggregate(task).info
    assert info["image_clients"] == ["site-2", "site-4"] and info["text_clients"] == []
    assert np.isfinite(info["kd_loss"]) and info["bytes_up"] == 2 * 16 * 32 * 4
    for key, value in strategy.model.text_head.state_dict().items():
        torch.testing.assert_close(value, text_head[key], rtol=0, atol=0)
    assert any(not torch.equal(v, image_head[k]) for k, v in strategy.model.image_head.state_dict().items())
    # the distillation steps through training.step.optimizer_step: a non-finite target stops it before any update
    with pytest.raises(FloatingPointError, match=r"server distillation, round 0: non-finite loss nan at step 0"):
        strategy.distil(ids, {"image": np.full((16, 32), np.nan, np.float32), "text": None}, 0)


def _client(data_dir, tmp_path, site, role, model=None, overrides=None, local_steps=8) -> CreamFLClient:
    client = CreamFLClient(model)
    cfg = load_config("tiny", merge_overrides(CREAMFL, overrides or {}))
    store = SiteStore(tmp_path / "stores" / site, site)
    client.initialize(SiteContext(site, cfg, store, data_dir=str(data_dir), role=role, local_steps=local_steps))
    return client


def _fixed_batch_loss(model, objective, batches) -> float:
    model.eval()
    with torch.no_grad():
        return float(np.mean([float(objective(model, batch)[0]) for batch in batches]))


# a narrower image-text client than the default (CNN 16-32-64-128), to keep the test fast
CNN_IMAGE_TEXT = {"image_encoder": "cnn", "image_kwargs": {"widths": [8, 16]}, "text_encoder": "tiny_bert",
                  "text_kwargs": {"num_layers": 1, "hidden_size": 32, "num_heads": 2}}  # fmt: skip


def test_the_server_pass_and_each_roles_private_pass_lower_their_losses(creamfl_data_dir, tmp_path):
    """Three rounds of 8 steps: the server's contrastive pass lowers its loss on the public split, and each role's
    private pass lowers its own task loss on a fixed private batch (eval mode) by a clear margin, not by a collapse
    to the uniform prediction (an image-text client must end below ln B). The private steps follow one lr schedule
    across the rounds, as at every VLP site (``train.federated_schedule: run``), unless the config says ``round``."""
    strategy = _strategy(creamfl_data_dir, rounds=3, server_steps=8, regularisers="none")
    public = list(strategy._loader(strategy.public.ids, shuffle=False))
    contrastive = ContrastiveObjective(strategy.ctx.cfg.train.positives)
    before = _fixed_batch_loss(strategy.model, contrastive, public)
    for rnd in range(3):
        strategy.train_public(rnd)
    assert _fixed_batch_loss(strategy.model, contrastive, public) < before - 0.5  # measured 3.50 -> 1.42
    cfg = strategy.ctx.cfg
    floor = cfg.train.lr * cfg.train.min_lr_ratio
    for site, role, model, margin in [("site-1", "image_text", CNN_IMAGE_TEXT, 0.08), ("site-2", "image", None, 0.08),
                                      ("site-3", "text", None, 0.08)]:  # fmt: skip
        client = _client(creamfl_data_dir, tmp_path, site, role, model)
        batch = [next(iter(client.data.train_loader))]
        start, lrs = _fixed_batch_loss(client.model, client.objective(), batch), []
        for rnd in range(3):
            task = strategy.round_tasks(rnd)[0]
            lrs.append(client.train(task, strategy.global_message(task), lambda: False).metrics["lr"])
        end = _fixed_batch_loss(client.model, client.objective(), batch)
        assert end < start - margin, (role, start, end)  # measured: 3.50 -> 3.32, 0.69 -> 0.54, 0.69 -> 0.53
        if role == "image_text":
            assert end < math.log(batch[0]["image"].shape[0]) - margin
        # one warmup + cosine over the 24 steps of the run: round 0 ends high, the last round at the floor
        train = cfg.train
        run_lr = train.lr * lr_multiplier(8, 24, int(train.warmup_fraction * 24), train.schedule, train.min_lr_ratio)
        assert lrs[0] == pytest.approx(run_lr, rel=1e-5) and lrs[0] > 10 * floor
        assert lrs[-1] == pytest.approx(floor, rel=1e-5)
    round_cfg = {"train": {"federated_schedule": "round"}}  # a fresh schedule every round: each ends at the floor
    client = _client(creamfl_data_dir, tmp_path / "round", "site-2", "image", overrides=round_cfg, local_steps=2)
    task = strategy.round_tasks(0)[0]
    reply = client.train(task, strategy.global_message(task), lambda: False)
    assert reply.metrics["lr"] == pytest.approx(floor, rel=1e-5)


def test_reg_steps_sets_the_regulariser_steps_and_the_inter_term_falls(creamfl_data_dir, tmp_path):
    """``reg_steps`` reaches the clients as a task option; the client takes exactly that many regulariser steps over
    reshuffled passes of the public subset, and the inter-modal term against the round's fixed bank of global text
    representations falls: the term pulls the client's image space towards the server's. A bad value is refused."""
    from flare_vlp.algorithms.creamfl import inter_modal_contrast
    from flare_vlp.config import ConfigError

    strategy = _strategy(creamfl_data_dir, reg_steps=24, regularisers="inter")
    task = strategy.round_tasks(0)[0]
    assert task.options["reg_steps"] == 24
    message = strategy.global_message(task)
    client = _client(creamfl_data_dir, tmp_path, "site-2", "image", local_steps=1)
    ids, banks = client._received(message)
    rows = torch.arange(len(ids))

    def inter() -> float:
        image = torch.as_tensor(client._represent(ids)["image"])
        return float(inter_modal_contrast(image, banks["text"], rows, 0.5))

    before = inter()
    reply = client.train(task, message, lambda: False)
    assert reply.metrics["reg_steps"] == 24 and "reg_intra" not in reply.metrics
    after = inter()
    assert after < before - 0.1, (before, after)  # measured 2.769 -> 2.554 (ln 16 = 2.773)
    assert len(list(client._public_batches(ids, 0, 0))) == math.ceil(len(ids) / client.cfg.train.batch_size)
    # the regulariser steps through training.step.optimizer_step: a non-finite loss stops it, naming site and step
    nan_banks = {m: torch.full_like(bank, float("nan")) for m, bank in banks.items()}
    with pytest.raises(FloatingPointError, match=r"site 'site-2' CreamFL regulariser: non-finite loss nan at step 0"):
        client._regularise(client._public_batches(ids, 1, 0), ids, nan_banks, {}, ("inter",), 0.5, 0.5, 1e-3)
    with pytest.raises(ConfigError, match="reg_steps"):
        method_config("creamfl", {"reg_steps": -1})
    bad = strategy.round_tasks(0)[0]
    bad.options["reg_steps"] = 2.5
    with pytest.raises(ValueError, match="site-2.*reg_steps=2.5"):
        client.train(bad, message, lambda: False)


def test_reg_lr_runs_the_regulariser_at_the_private_pass_scheduled_lr_or_at_the_base_lr(creamfl_data_dir, tmp_path):
    """``reg_lr: schedule`` (default): the regulariser steps at the lr the private pass's run-wide schedule reached,
    so it decays with the run as one optimiser's would (the reference); ``base``: at ``train.lr`` every round. The
    steps taken at that lr move the model by less when the lr is lower. Bad values are refused."""
    from flare_vlp.config import ConfigError

    moved = {}
    for reg_lr in ("schedule", "base"):
        strategy = _strategy(creamfl_data_dir, rounds=2, reg_steps=4, regularisers="inter", reg_lr=reg_lr)
        assert strategy.round_tasks(1)[0].options["reg_lr"] == reg_lr
        client = _client(creamfl_data_dir, tmp_path / reg_lr, "site-2", "image", local_steps=4)
        for rnd in range(2):
            task = strategy.round_tasks(rnd)[0]
            message = strategy.global_message(task)
            before = {k: v.clone() for k, v in client.model.state_dict().items()}
            reply = client.train(task, message, lambda: False)
        cfg = client.cfg.train
        floor = cfg.lr * cfg.min_lr_ratio
        if reg_lr == "schedule":  # the last round's private pass ends the run: its schedule is at the floor
            assert reply.metrics["reg_lr"] == pytest.approx(reply.metrics["lr"], rel=1e-6)
            assert reply.metrics["reg_lr"] == pytest.approx(floor, rel=1e-5) and floor < cfg.lr / 10
        else:
            assert reply.metrics["reg_lr"] == pytest.approx(cfg.lr, rel=1e-6)
        moved[reg_lr] = sum(float((v.float() - before[k].float()).norm()) for k, v in client.model.state_dict().items())
    assert moved["schedule"] < moved["base"], moved
    with pytest.raises(ConfigError, match="reg_lr"):
        method_config("creamfl", {"reg_lr": "fixed"})
    bad = strategy.round_tasks(0)[0]
    bad.options["reg_lr"] = "fixed"
    with pytest.raises(ValueError, match="site-2.*reg_lr='fixed'"):
        client.train(bad, strategy.global_message(bad), lambda: False)


def test_a_restarted_client_resumes_its_private_model_and_refuses_another_architectures(creamfl_data_dir, tmp_path):
    """The whole private model lives in the site store: a client started again on the same store (a site or job
    restart) resumes it and its round count; one of another architecture on that store is refused by name."""
    from flare_vlp.methods.site_store import SiteStoreError

    strategy = _strategy(creamfl_data_dir, regularisers="none")
    task = strategy.round_tasks(0)[0]
    first = _client(creamfl_data_dir, tmp_path, "site-3", "text", local_steps=2)
    untrained = {k: v.clone() for k, v in first.model.state_dict().items()}
    assert first.train(task, strategy.global_message(task), lambda: False).metrics["rounds_done"] == 1
    trained = first.model.state_dict()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)
    again = _client(creamfl_data_dir, tmp_path, "site-3", "text", local_steps=2)
    assert again.personal.rounds_done == 1
    for key, value in again.model.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    other = {"text_encoder": "tiny_bert", "text_kwargs": {"num_layers": 1, "hidden_size": 32, "num_heads": 2}}
    with pytest.raises(SiteStoreError, match="site-3.*entry 'model' has model="):
        _client(creamfl_data_dir, tmp_path, "site-3", "text", model=other)


def test_a_text_site_trains_on_report_only_rows_and_an_image_site_cannot(creamfl_data_dir, tmp_path):
    """A text-only site's report archive has no images: with ``data.allow_empty_image`` its rows may name none, its
    loaders read none (batches without ``image``) and it trains its CreamFL round; an image site given such rows is
    refused, naming the site and a row."""
    from flare_vlp.data.manifest import Record, write_manifest
    from flare_vlp.experiments.site_data import SiteDataError

    rows = read_manifest(Path(creamfl_data_dir) / "manifest.jsonl")
    text_rows = [r for r in rows if r.site == "site-3" and r.split in ("train", "val")]
    assert text_rows
    no_images = [Record(r.id, "" if r in text_rows else r.image, r.report, r.labels, r.site, r.split) for r in rows]
    manifest = write_manifest(no_images, tmp_path / "report_only.jsonl")
    overrides = merge_overrides(CREAMFL, {"data": {"allow_empty_image": True}})
    strategy = _strategy(creamfl_data_dir, regularisers="both")
    task = strategy.round_tasks(0)[0]
    cfg = load_config("tiny", overrides)
    client = CreamFLClient()
    store = SiteStore(tmp_path / "stores" / "site-3", "site-3")
    client.initialize(SiteContext("site-3", cfg, store, manifest=str(manifest), role="text", local_steps=2))
    batch = next(iter(client.data.train_loader))
    assert "image" not in batch and batch["input_ids"].shape[0] == cfg.train.batch_size
    reply = client.train(task, strategy.global_message(task), lambda: False)
    assert set(reply.representations.arrays) == {"text"} and math.isfinite(reply.metrics["train_loss"])
    assert math.isfinite(client.evaluate(task, Message()).metrics["val_loss"])
    image_site = CreamFLClient()
    with pytest.raises(SiteDataError, match=r"site 'site-3'.*row '.*' of site 'site-3' .* has no image"):
        store = SiteStore(tmp_path / "stores" / "image", "site-3")
        image_site.initialize(SiteContext("site-3", cfg, store, manifest=str(manifest), role="image", local_steps=2))


BAD_REPLIES = [
    ("image", {"image": np.zeros((16, 16), np.float32)}, slice(None), "shape"),  # a client of another embed_dim
    ("image", {}, slice(1, None), "ids differ"),
    ("image", {"text": np.zeros((16, 32), np.float32)}, slice(None), "has no ['text'] modality"),
    ("image_text", {"text": np.full((16, 32), np.inf, np.float32)}, slice(None), "non-finite"),
    ("audio", {}, slice(None), "not a CreamFL role"),
]


def test_bad_replies_are_refused_with_the_reason(creamfl_data_dir):
    strategy = _strategy(creamfl_data_dir)
    task = strategy.round_tasks(0)[0]
    for role, arrays, ids_slice, says in BAD_REPLIES:
        ids = strategy.task_message(task, "s").representations.ids[ids_slice]
        reply = _reply(ids, role if role != "audio" else "image", **arrays)
        reply.meta[TaskMeta.ROLE] = role
        reason = strategy.accept(task, "site-9", reply)
        assert reason is not None and says in reason and "site-9" in reason, (role, says, reason)
    strategy.reset()


def test_empty_public_split_and_unknown_roles_are_errors(tiny_data_dir, creamfl_data_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="no public split.*public_samples"):
        _strategy(tiny_data_dir, config_overrides=None)
    with pytest.raises(ValueError, match="has no role 'audio'.*roles"):
        assign_roles("creamfl", ["site-1", "site-2"], "image:1,audio:1")
    with pytest.raises(ValueError, match="gives 3 sites, but there are 2"):
        assign_roles("creamfl", ["site-1", "site-2"], "image:2,text:1")
    config = tmp_path / "creamfl.yaml"  # tiny + the fixture's overrides, as a user's YAML
    config.write_text(yaml.safe_dump(merge_overrides(yaml.safe_load(preset_path("tiny").read_text()), CREAMFL)))
    cli = ["run", "--method", "creamfl", "--config", str(config), "--data-dir", str(creamfl_data_dir)]
    assert main([*cli, "--roles", "image:5", "--out", str(tmp_path / "cli")]) == 2
    assert "gives 5 sites, but there are 3 training sites" in capsys.readouterr().err
    assert main([*cli, "--roles", "image:1,txt:2", "--out", str(tmp_path / "cli")]) == 2
    assert "did you mean 'text'" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    with pytest.raises(ValueError, match="has no site role 'audio'"):
        RunSpec("creamfl", sites=("site-1",), config_overrides=CREAMFL, data=DataSource(data_dir=str(creamfl_data_dir)),
                roles={"site-1": "audio"})  # fmt: skip


def test_heterogeneous_roles_share_only_public_representations(tmp_path, creamfl_data_dir):
    """In process, all three roles: every reply the server gets carries only public-set representations in the
    site's modalities (no weights, no private sample); a reply with weights or a private id is stopped at the site."""
    with recorded_replies(CreamFLStrategy) as seen:
        data = DataSource(data_dir=str(creamfl_data_dir), site_map={s: s for s in CREAMFL_ROLES})
        spec = RunSpec("creamfl", sites=tuple(CREAMFL_ROLES), config_overrides=CREAMFL, method_settings=SETTINGS,
                       num_rounds=2, data=data, local_steps=1, roles=CREAMFL_ROLES)  # fmt: skip
        run = run_in_process(spec, tmp_path / "run")
    rows = read_manifest(Path(creamfl_data_dir) / "manifest.jsonl")
    public = {r.id for r in rows if r.split == "public"}
    private = {r.id for r in rows if r.split != "public"}
    expected = {"image_text": {"image", "text"}, "image": {"image"}, "text": {"text"}}
    assert len(seen) == 6
    for site, reply in seen:
        assert not reply.weights and not reply.adapters
        assert set(reply.representations.ids) <= public and not set(reply.representations.ids) & private
        assert set(reply.representations.arrays) == expected[CREAMFL_ROLES[site]]
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["event"] == "round"]
    assert [e["image_clients"] for e in rounds] == [["site-1", "site-2"]] * 2
    assert [e["text_clients"] for e in rounds] == [["site-1", "site-3"]] * 2
    # the architectures differ by role, and the server model is larger than any client's
    sizes = {s: sum(p.numel() for p in a.model.parameters()) for s, a in run.algos.items()}
    encoders = {s: type(a.model.net.image_encoder).__name__ for s, a in run.algos.items()}
    assert encoders["site-1"] != encoders["site-2"]
    assert sum(p.numel() for p in run.strategy.model.parameters()) > max(sizes.values())
    # each site's whole private model is in its store, and all of it is declared never to leave
    for site in CREAMFL_ROLES:
        stored, meta = SiteStore(tmp_path / "run" / "stores" / site, site).load("model")
        assert set(stored) == run.algos[site].declaration().private_keys and meta["rounds_done"] == 2
    # the site-side disclosure check: weights, or a representation of a private sample, never leave
    algo = run.algos["site-2"]
    ctx = SiteContext("site-2", load_config("tiny", CREAMFL), store=None, role="image")
    asked = Message(representations=Representations(sorted(public)[:2], {}))
    leak = Message(weights={"net.image_head.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(DisclosureError, match="does not declare"):
        seal_reply(ctx, algo.declaration(), leak, asked)
    private_id = sorted(private)[0]
    sneak = Message(representations=Representations([private_id], {"image": np.zeros((1, 32), np.float32)}))
    with pytest.raises(DisclosureError, match="not public ids"):
        seal_reply(ctx, algo.declaration(), sneak, asked)


def test_flare_simulator_run_with_a_role_mix_then_a_job_restart_from_the_site_stores(tmp_path, creamfl_data_dir):
    """`run_federated` in the FLARE simulator with a role mix; the server model is evaluated on the test split. Then
    a second FLARE job resumes the first's persisted server state on the same site stores: every site restores its
    private model and its round count from its store (a job restart), and no site model reaches the server."""
    from nvflare.recipe import SimEnv

    from flare_vlp.fl.persistor import MODEL_FILE, read_checkpoint
    from flare_vlp.recipes import MethodRecipe
    from flare_vlp.recipes.run import run_federated

    overrides = {**CREAMFL, "eval": {"linear_probe": False}}
    spec = RunSpec("creamfl", num_rounds=1, local_steps=1, data=DataSource(data_dir=str(creamfl_data_dir)),
                   method_settings=SETTINGS, config_overrides=overrides, role_mix="image:1,text:1,image_text:1",
                   store_dir=str(tmp_path / "stores" / "{site}"))  # fmt: skip
    summary = run_federated(spec, tmp_path / "creamfl", env="sim", echo=lambda m: None)
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@5", "zero_shot_pooled"):
        assert 0 <= summary[key] <= 1
    written = json.loads((tmp_path / "creamfl" / "summary.json").read_text())  # the server model's evaluation
    pooled = written["eval"]["groups"]["pooled"]
    assert written["summary"] == summary and summary["zero_shot_pooled"] == pooled["zero_shot"]["macro"]
    assert all(summary[k] == pooled["retrieval"][k] for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@5"))
    assert summary != written["floor"], "the trained server model must not score exactly as the untrained one"
    events = [json.loads(line) for line in (tmp_path / "creamfl" / "metrics.jsonl").read_text().splitlines()]
    roles = {e["site"]: e["role"] for e in events if e["event"] == "site"}
    assert roles == {"site-1": "image", "site-2": "text", "site-3": "image_text"}
    (rnd,) = [e for e in events if e["event"] == "round"]
    assert rnd["image_clients"] == ["site-1", "site-3"] and rnd["text_clients"] == ["site-2", "site-3"]
    # the job restart: the same sites, roles and stores, resuming the persisted round 0
    (checkpoint,) = (tmp_path / "creamfl" / "flare").rglob(MODEL_FILE)
    saved = read_checkpoint(checkpoint)
    assert saved["round"] == 0 and saved["params"]  # the server model's global weights
    resumed = spec.replace(num_rounds=2, role_mix=None, roles=roles, sites=tuple(roles), num_threads=1)
    recipe = MethodRecipe(resumed, name="creamfl", run_dir=tmp_path / "second", resume_from=checkpoint)
    second = Path(recipe.run(SimEnv(clients=list(roles), workspace_root=str(tmp_path / "ws"))).get_result())
    events = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round"] == [1]  # continued after the persisted round
    sites = {(e["site"], e["round"], e["rounds_done"]) for e in events if e["event"] == "site"}
    assert sites == {(site, 1, 2) for site in roles}
    for site, role in roles.items():
        assert "restored its model from the site store (1 rounds)" in (second / site / "log.txt").read_text()
        _, meta = SiteStore(tmp_path / "stores" / site, site).load("model")
        assert meta["rounds_done"] == 2 and meta["role"] == role
    assert not list((second / "server").rglob("*.safetensors")), "no site model reaches the server"
