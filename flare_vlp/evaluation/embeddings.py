"""Embedding passes: run a dual encoder once over a dataset and keep everything the evaluators need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flare_vlp.data.keys import SampleKey
from flare_vlp.data.text import TextImageCollate

__all__ = ["Embeddings", "compute_embeddings", "embed_texts"]


@dataclass
class Embeddings:
    """Per-sample outputs of one pass (row i of every array is sample i)."""

    image: torch.Tensor  # N x E, l2-normalised
    text: torch.Tensor  # N x E, l2-normalised
    features: np.ndarray  # N x F pooled image-encoder features (for the linear probe)
    labels: np.ndarray  # N x findings, 0/1
    sites: list[str]

    def subset(self, mask: np.ndarray) -> Embeddings:
        idx = np.flatnonzero(mask)
        t = torch.from_numpy(idx)
        return Embeddings(
            self.image[t], self.text[t], self.features[idx], self.labels[idx], [self.sites[i] for i in idx]
        )

    @staticmethod
    def concat(parts: Sequence[Embeddings]) -> Embeddings:
        return Embeddings(
            torch.cat([p.image for p in parts]),
            torch.cat([p.text for p in parts]),
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [s for p in parts for s in p.sites],
        )


@torch.no_grad()
def compute_embeddings(
    model: nn.Module,
    dataset: Dataset,
    tokenizer,
    *,
    batch_size: int = 128,
    max_length: int = 64,
    device: torch.device | str = "cpu",
) -> Embeddings:
    """Image/text embeddings, pooled image features, labels and sites of every sample of ``dataset``."""
    was_training = model.training
    model.eval().to(device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=TextImageCollate(tokenizer, max_length)
    )
    imgs, txts, feats, labels, sites = [], [], [], [], []
    for batch in loader:
        images = batch[SampleKey.IMAGE].to(device)
        features = model.image_encoder(images)
        image = nn.functional.normalize(model.image_head(model.image_align(features)), dim=-1)
        text = model.encode_text(batch[SampleKey.INPUT_IDS].to(device), batch[SampleKey.ATTENTION_MASK].to(device))
        imgs.append(image.float().cpu())
        txts.append(text.float().cpu())
        feats.append(features.float().cpu().numpy())
        labels.append(batch[SampleKey.LABELS].numpy())
        sites.extend(batch[SampleKey.SITE])
    model.train(was_training)
    return Embeddings(torch.cat(imgs), torch.cat(txts), np.concatenate(feats), np.concatenate(labels), sites)


@torch.no_grad()
def embed_texts(
    model: nn.Module, tokenizer, texts: Sequence[str], *, max_length: int = 64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """l2-normalised embeddings of free texts (prompts)."""
    was_training = model.training
    model.eval().to(device)
    tok = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float().cpu()
    model.train(was_training)
    return out
