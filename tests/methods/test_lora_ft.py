"""FedOPAL and its LoRA baselines on the platform: what travels, personal state in the site store, FFA-LoRA's
frozen shared A, orthogonality against hand-computed values, each LoRA target kind training, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from flare_vlp.algorithms.orthogonality import orthogonality_subspace, orthogonality_weights
from flare_vlp.methods.client import seal_reply
from flare_vlp.methods.lora_ft.client import STORE_ENTRY
from flare_vlp.methods.lora_ft.model import default_targets
from flare_vlp.methods.messages import Message
from flare_vlp.methods.payload import DisclosureError
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process
from flare_vlp.methods.site_store import SiteStore, SiteStoreError
from flare_vlp.models.lora import add_lora, lora_factor_pairs

SITES = ["site-1", "site-2"]
FAST = {"train": {"bn_recalibration_batches": 1}}


def _run(method, tmp_path, data_dir, rounds=1, store_dir=None, name="run", **settings):
    spec = RunSpec(method, method_settings=settings, sites=tuple(SITES), num_rounds=rounds, local_steps=2,
                   data=DataSource(data_dir=str(data_dir)), store_dir=store_dir, config_overrides=FAST)  # fmt: skip
    return run_in_process(spec, tmp_path / name)


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fedopal_sends_only_global_adapter_tensors(tmp_path, tiny_data_dir):
    run = _run("fedopal", tmp_path, tiny_data_dir, rounds=2)
    sent = run.strategy.global_weights()
    assert sent and all(".lora_A.global." in k or ".lora_B.global." in k for k in sent)
    algo = run.algos["site-1"]
    decl = algo.declaration()
    assert decl.private_keys and all(".personal." in k or k.startswith("head.") or "running_" in k or "num_batches"
                                     in k for k in decl.private_keys)  # fmt: skip
    assert any(".lora_B.personal." in k for k in decl.private_keys) and "head.weight" in decl.private_keys
    ctx = type("Ctx", (), {"site": "site-1", "role": "default"})()
    personal = next(k for k in decl.private_keys if ".lora_A.personal." in k)
    state = algo.model.state_dict()
    leak = Message(adapters={**{k: state[k].numpy() for k in sent}, personal: state[personal].numpy()})
    with pytest.raises(DisclosureError, match=r"private tensor.*lora_A\.personal"):
        seal_reply(ctx, decl, leak, Message())
    with pytest.raises(DisclosureError, match="head.weight"):
        seal_reply(ctx, decl, Message(adapters={"head.weight": state["head.weight"].numpy()}), Message())
    # the summary: per-site personalized metrics, their mean and worst site; R_orth's first active step recorded
    from flare_vlp.methods.lora_ft.evaluate import personalized_summary

    summary, per_site = personalized_summary(run.run_dir / "metrics.jsonl")
    assert set(per_site) == set(SITES)
    baccs = [m["test_bacc"] for m in per_site.values()]
    assert summary["bacc_worst"] == min(baccs) and summary["bacc_mean"] == pytest.approx(np.mean(baccs))
    # B_g and B_p both start at zero: R_orth has no gradient at step 0, only from step 1 (after both moved)
    assert all(m["orth_active_step"] == 1 for m in per_site.values())
    rounds = [e for e in _events(run.run_dir) if e["event"] == "round"]
    assert rounds[-1]["bytes_per_client"] == sum(v.nbytes for v in sent.values())
    # every step is training.step.optimizer_step: a non-finite loss stops the site, naming it and the step
    with torch.no_grad():
        algo.model.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"site 'site-1' \(fedopal\): non-finite loss nan at step 4"):
        algo._train_steps(1, lambda: False)


def test_personal_state_survives_rounds_and_a_job_restart_and_foreign_entries_are_refused(tmp_path, tiny_data_dir):
    store_dir = str(tmp_path / "stores" / "{site}")
    _run("fedopal", tmp_path, tiny_data_dir, rounds=2, store_dir=store_dir, name="a")
    store = SiteStore(tmp_path / "stores" / "site-1", "site-1")
    tensors, meta = store.load(STORE_ENTRY)
    assert meta["rounds_done"] == 2 and meta["steps_done"] == 4
    assert any(".lora_B.personal." in k for k in tensors) and "head.weight" in tensors
    run = _run("fedopal", tmp_path, tiny_data_dir, rounds=1, store_dir=store_dir, name="b")  # a new job
    _, meta = store.load(STORE_ENTRY)
    assert meta["rounds_done"] == 3 and meta["steps_done"] == 6  # continued from the stored state
    assert run.algos["site-1"].personal.rounds_done == 3
    # an entry of another site: refused, naming the site and the file, and left untouched
    site2 = tmp_path / "stores" / "site-2" / f"{STORE_ENTRY}.safetensors"
    foreign = tmp_path / "foreign" / "site-1"
    foreign.mkdir(parents=True)
    (foreign / f"{STORE_ENTRY}.safetensors").write_bytes(site2.read_bytes())
    with pytest.raises(SiteStoreError, match=r"site='site-2', expected 'site-1'"):
        _run("fedopal", tmp_path, tiny_data_dir, store_dir=str(tmp_path / "foreign" / "{site}"), name="c")
    assert (foreign / f"{STORE_ENTRY}.safetensors").read_bytes() == site2.read_bytes()
    # an entry of another model (another rank): refused, naming the field
    before = store.path(STORE_ENTRY).read_bytes()
    with pytest.raises(SiteStoreError, match=r"personal.*model="):
        _run("fedopal", tmp_path, tiny_data_dir, store_dir=store_dir, name="d", rank=2)
    assert store.path(STORE_ENTRY).read_bytes() == before


def test_ffa_lora_keeps_a_identical_on_every_site_and_fedsa_keeps_b_local(tmp_path, tiny_data_dir):
    run = _run("ffa_lora", tmp_path, tiny_data_dir, rounds=2, name="ffa")
    a = {
        s: {k: v for k, v in algo.model.state_dict().items() if ".lora_A.global." in k} for s, algo in run.algos.items()
    }
    assert a["site-1"] and all(torch.equal(a["site-1"][k], a["site-2"][k]) for k in a["site-1"])
    assert all(k.count(".lora_B.global.") for k in run.strategy.global_weights())  # only B travels
    b = {k: v for k, v in run.algos["site-1"].model.state_dict().items() if ".lora_B.global." in k}
    assert any(v.abs().sum() > 0 for v in b.values())  # B trained
    fedsa = _run("fedsa_lora", tmp_path, tiny_data_dir, name="fedsa")
    assert all(".lora_A.global." in k for k in fedsa.strategy.global_weights())
    assert any(".lora_B.global." in k for k in fedsa.algos["site-1"].declaration().private_keys)


def _factors(rng, *shapes):
    return [torch.tensor(rng.normal(size=s)) for s in shapes]


def test_orthogonality_on_conv_lora_matches_hand_computed_values():
    conv = nn.Sequential(nn.Conv2d(3, 5, 3))
    torch.manual_seed(0)
    add_lora(conv, "0", r=2, adapter_names=("global", "personal"), towers=None)
    with torch.no_grad():
        for m in (conv[0].lora_B["global"], conv[0].lora_B["personal"]):
            m.weight.normal_()
    (a_g, b_g), (a_p, b_p) = lora_factor_pairs(conv, "global")[0], lora_factor_pairs(conv, "personal")[0]
    assert a_g.shape == (2, 27) and b_g.shape == (5, 2)
    dw_g, dw_p = (b_g @ a_g).detach().numpy(), (b_p @ a_p).detach().numpy()
    cos2 = (dw_g * dw_p).sum() ** 2 / ((dw_g**2).sum() * (dw_p**2).sum())
    value = orthogonality_weights([(a_g, b_g, a_p, b_p)])
    assert float(value.detach()) == pytest.approx(cos2, rel=1e-5)
    value.backward()
    assert conv[0].lora_A["personal"].weight.grad.abs().sum() > 0  # the views backpropagate into the conv weights
    # hand-computed 2 x 2 example: A_g = [[1, 0], [0, 1]], A_p = [[1, 1], [0, 2]] -> A_g A_p^T = A_p^T, norm^2 = 6
    a_g2, a_p2 = torch.eye(2), torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    b = torch.ones(3, 2)
    assert float(orthogonality_subspace([(a_g2, b, a_p2, b)])) == pytest.approx(6.0)
    # parallel updates -> 1, orthogonal -> 0
    a = torch.tensor([[1.0, 0.0]])
    assert float(orthogonality_weights([(a, torch.ones(2, 1), a, torch.ones(2, 1))])) == pytest.approx(1.0)
    a2 = torch.tensor([[0.0, 1.0]])
    assert float(orthogonality_weights([(a, torch.ones(2, 1), a2, torch.ones(2, 1))])) == pytest.approx(0.0)


def _train_steps(model, inputs, steps=3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(steps):
        loss = model(inputs).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return params


def test_hf_vit_query_value_lora_trains():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8, num_channels=1)  # fmt: skip
    torch.manual_seed(0)
    vit = ViTModel(cfg)
    targets = default_targets(vit)  # the attention's query / value (named q_proj / v_proj in newer transformers)
    assert targets in (["query", "value"], ["q_proj", "v_proj"])
    adapted = add_lora(vit, targets, r=4, adapter_names=("global", "personal"), towers=None)
    assert len(adapted) == 4 and all(n.endswith(tuple(targets)) for n in adapted)

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit(pixel_values=x).last_hidden_state[:, 0]

    model = Pooled()
    _train_steps(model, torch.rand(4, 1, 32, 32))
    for name in ("global", "personal"):
        assert all(b.abs().sum() > 0 for _, b in lora_factor_pairs(vit, name))
    assert all(not p.requires_grad for n, p in vit.named_parameters() if "lora_" not in n)


def test_monai_vit_fused_qkv_and_conv_targets_train_through_the_method(tmp_path, tiny_data_dir):
    run = _run("fedopal", tmp_path, tiny_data_dir, name="vit", **{})
    assert run.algos["site-1"].adapted == ["image_encoder.stages.3.0"]  # the tiny CNN's last conv (Conv2d LoRA)
    spec = RunSpec("fedavg_lora", sites=tuple(SITES), num_rounds=1, local_steps=2,
                   data=DataSource(data_dir=str(tiny_data_dir)),
                   config_overrides={**FAST, "model": {"image_encoder": "vit_tiny"}})  # fmt: skip
    vit = run_in_process(spec, tmp_path / "vit2")
    algo = vit.algos["site-1"]
    assert algo.adapted and all(n.endswith(".attn.qkv") for n in algo.adapted)  # MONAI's fused q/k/v projection
    b = [v for k, v in algo.model.state_dict().items() if ".lora_B.global." in k]
    assert b and all(v.abs().sum() > 0 for v in b)


def test_bad_targets_and_rank_name_the_module(tmp_path, tiny_data_dir):
    with pytest.raises(ValueError, match=r"LoRA target 'nope' matches no nn.Linear / nn.Conv2d"):
        _run("fedopal", tmp_path, tiny_data_dir, name="bad1", targets=["nope"])
    with pytest.raises(ValueError, match=r"rank r=64 is larger than module 'image_encoder.stages.0.0' allows"):
        _run("fedopal", tmp_path, tiny_data_dir, name="bad2", rank=64, targets=["image_encoder.stages.0.0"])


@pytest.mark.slow
def test_fedopal_runs_in_the_flare_simulator_and_report_shows_mean_and_worst_site(tmp_path, tiny_data_dir, capsys):
    from flare_vlp.cli import main
    from flare_vlp.recipes.run import run_federated

    out = tmp_path / "sim"
    spec = RunSpec("fedopal", num_rounds=2, local_steps=2, data=DataSource(data_dir=str(tiny_data_dir)),
                   config_overrides=FAST)  # fmt: skip
    summary = run_federated(spec, out, env="sim", echo=lambda line: None)
    assert 0 <= summary["bacc_worst"] <= summary["bacc_mean"] <= 1 and 0 <= summary["auc_mean"] <= 1
    written = json.loads((out / "summary.json").read_text())
    assert set(written["per_site"]) == set(SITES)
    events = _events(out)
    assert {(e["round"], e["site"]) for e in events if e["event"] == "site"} == {(r, s) for r in (0, 1) for s in SITES}
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| run | bacc_mean | bacc_worst | auc_mean | auc_worst |" in table
    assert f"| sim | {summary['bacc_mean']:.3f} | {summary['bacc_worst']:.3f} |" in table
    from flare_vlp.experiments.report import comparison_table  # the table `flare-vlp run` prints after the run
    from flare_vlp.methods.registry import get_method

    printed = comparison_table({"fedopal": summary}, extra=get_method("fedopal").report_columns)
    assert printed.splitlines()[0] == "| run | bacc_mean | bacc_worst | auc_mean | auc_worst |"


def test_tower_starts_from_a_vlp_run_folder_and_a_missing_one_is_named(tmp_path, tiny_data_dir):
    from safetensors.torch import save_file

    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model

    vlp = build_model(load_config("tiny", FAST).model, seed=7)  # stands in for a trained FedAvg / FedDRA model
    with torch.no_grad():
        vlp.image_encoder.stages[0][0].weight.add_(1.0)
    (tmp_path / "vlp" / "models").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in vlp.state_dict().items()}, tmp_path / "vlp" / "models" / "global.safetensors"
    )
    run = _run("fedopal", tmp_path, tiny_data_dir, name="init", init_from=str(tmp_path / "vlp"))
    tower = run.algos["site-1"].model.encoder.image_encoder
    assert torch.equal(tower.stages[0][0].weight, vlp.image_encoder.stages[0][0].weight)  # frozen, so unchanged
    with pytest.raises(FileNotFoundError, match=r"`init_from` .*nope: no such VLP run folder"):
        _run("fedopal", tmp_path, tiny_data_dir, name="init2", init_from=str(tmp_path / "nope"))
