"""Offline tokenizer loading and the tokenizing collate function."""

from __future__ import annotations

import pytest
import torch

from flare_vlp.data.text import TextImageCollate, TokenizerLoadError, default_text_model_path, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _sample(report: str, i: int) -> dict:
    image = torch.full((1, 8, 8), float(i))
    return {"image": image, "report": report, "labels": [i % 2, 1], "id": f"r{i}", "site": "a"}


def test_default_tokenizer_is_the_packaged_minilm(tokenizer, tmp_path):
    assert default_text_model_path()
    ids = tokenizer("Mild cardiomegaly.")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    with pytest.raises(TokenizerLoadError, match="does-not-exist"):
        load_tokenizer(tmp_path / "does-not-exist")
    with pytest.raises(TokenizerLoadError, match="empty-folder"):
        (tmp_path / "empty-folder").mkdir()
        load_tokenizer(tmp_path / "empty-folder")


def test_collate_pads_to_longest_and_truncates(tokenizer):
    collate = TextImageCollate(tokenizer, max_length=10)
    long = "Large right pleural effusion with compressive atelectasis of the right lower lobe and more."
    batch = collate([_sample("Normal.", 0), _sample("Small nodule.", 1)])
    n0, n1 = (len(tokenizer(t)["input_ids"]) for t in ("Normal.", "Small nodule."))
    assert n0 < n1 <= 10 and batch["input_ids"].shape == (2, n1)
    assert batch["attention_mask"].tolist()[0] == [1] * n0 + [0] * (n1 - n0)
    assert batch["image"].shape == (2, 1, 8, 8) and batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert batch["id"] == ["r0", "r1"] and batch["site"] == ["a", "a"] and "split" not in batch
    batch = collate([_sample(long, 0), _sample("Normal.", 1)])
    assert batch["input_ids"].shape == (2, 10) and batch["input_ids"][0, -1] == tokenizer.sep_token_id


def test_collate_rejects_bad_input(tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        TextImageCollate(tokenizer, max_length=1)
    collate = TextImageCollate(tokenizer)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="no 'report' field"):
        collate([{"image": torch.zeros(1, 2, 2), "labels": [0]}])
