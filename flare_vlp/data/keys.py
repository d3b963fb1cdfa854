"""The names of the fields of one sample and of one batch, in one place.

Datasets, transforms, the collate function, the training loop and the evaluators all index the same dicts; a typo in
a bare string key would only show up as a ``KeyError`` deep inside a federated round, so every key is a member of
:class:`SampleKey`. It is a ``StrEnum``: ``SampleKey.IMAGE == "image"``, so plain-string users keep working.
"""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["SampleKey"]


class SampleKey(StrEnum):
    """Keys of a sample dict (from a dataset) and of a batch dict (from :class:`~flare_vlp.data.text.TextImageCollate`).

    Attributes:
        IMAGE: ``1 x H x W`` float32 image in ``[0, 1]`` (a sample) or ``B x 1 x H x W`` (a batch).
        REPORT: the free-text report (``str``; a ``list[str]`` in a batch).
        LABELS: float32 multi-hot vector in ``Manifest.findings`` order.
        ID: the manifest record id.
        SITE: the site (federated client) the record belongs to.
        SPLIT: the manifest split (``train`` / ``val`` / ``test``).
        INPUT_IDS: token ids of the report, ``B x T`` (batch only).
        ATTENTION_MASK: 1 for real tokens, 0 for padding, ``B x T`` (batch only).
    """

    IMAGE = "image"
    REPORT = "report"
    LABELS = "labels"
    ID = "id"
    SITE = "site"
    SPLIT = "split"
    INPUT_IDS = "input_ids"
    ATTENTION_MASK = "attention_mask"
