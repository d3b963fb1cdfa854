"""From a config to objects: the manifest (SynthCXR generated on demand), datasets, loaders, tokenizer and model.

The FLARE executors call the same builders as the centralized baseline, so both see identical data and models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from flare_vlp.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    config_from_dict,
    config_to_dict,
)
from flare_vlp.data.manifest import Manifest, read_manifest
from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

if TYPE_CHECKING:  # torch and the models are imported where used: checking a config (flare-vlp run's pre-launch
    # check, flare-vlp config show) needs neither, and importing them takes seconds
    from torch.utils.data import DataLoader, Dataset

    from flare_vlp.models import DualEncoder

# MONAI: the datasets and the tokenizing collate (flare_vlp.data.datasets / .text) are imported where they are used:
# they import MONAI (6-7 s), which a FLARE server process (it only builds the model, writes the run folder) never needs.

__all__ = [
    "synth_config",
    "validate_config",
    "resolved_config_dict",
    "default_data_dir",
    "prepare_manifest",
    "build_dataset",
    "build_loader",
    "build_tokenizer",
    "build_model",
]

MANIFEST_NAME = "manifest.jsonl"


def synth_config(cfg: ExperimentConfig) -> SynthConfig:
    """The SynthCXR config of an experiment: its ``data.synth`` mapping, validated strictly (unknown keys, wrong types
    and out-of-range values raise :class:`~flare_vlp.config.ConfigError` naming ``data.synth.<key>``), with
    ``unseen_site`` true unless the mapping says otherwise, and the experiment's seed and image size.

    Entry points call :func:`validate_config` (which calls this) right after ``load_config``: the config layer does not
    import the data layer, so ``load_config`` alone cannot check ``data.synth``.
    """
    synth = cfg.data.synth
    if isinstance(synth, dict):
        synth = {"unseen_site": True, **synth}
    base = config_from_dict(SynthConfig, synth, prefix="data.synth.")
    try:
        return dataclasses.replace(base, seed=cfg.seed, size=cfg.data.image_size)
    except ValueError as e:
        raise ConfigError(f"`data.synth` with seed {cfg.seed} and data.image_size {cfg.data.image_size}: {e}") from None


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check what ``load_config`` cannot (``data.synth``), so a bad key fails before any work starts; returns ``cfg``.

    The keys of ``data.synth`` are always checked; the whole SynthCXR config (with the experiment's seed and image
    size) only when the data is generated (``data.manifest`` is null).
    """
    if cfg.data.manifest is None:
        synth_config(cfg)
    else:
        config_from_dict(SynthConfig, cfg.data.synth, prefix="data.synth.")
    kwargs = cfg.model.image_kwargs
    if cfg.data.augment and kwargs.get("frozen_blocks") and kwargs.get("feature_cache", True):
        raise ConfigError(
            "`data.augment` is true but `model.image_kwargs.frozen_blocks` caches the frozen trunk's output per image: "
            "an augmented image is never seen twice, so every step would miss the cache; set data.augment: false "
            "(or model.image_kwargs.feature_cache: false)"
        )
    return cfg


def resolved_config_dict(cfg: ExperimentConfig) -> dict:
    """``config_to_dict(cfg)`` with ``data.synth`` resolved to every SynthCXR setting when the data is generated (for
    run folders and ``flare-vlp config show``); loading it back gives the same SynthCXR data."""
    data = config_to_dict(cfg)
    if cfg.data.manifest is None:
        data["data"]["synth"] = synth_config(cfg).to_dict()
    return data


def default_data_dir(cfg: ExperimentConfig, root: str | Path) -> Path:
    """``root/data/synthcxr-<hash>``: one folder per distinct SynthCXR config, shared by every run that uses it."""
    digest = hashlib.sha256(json.dumps(synth_config(cfg).to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return Path(root) / "data" / f"synthcxr-{digest}"


def prepare_manifest(cfg: ExperimentConfig, data_dir: str | Path, *, progress=None) -> Manifest:
    """Read ``data.manifest``, or SynthCXR from ``data_dir``: generated when missing, reused when made with the same
    config; a non-empty folder holding anything else is an error (never silently replaced)."""
    validate_config(cfg)
    if cfg.data.manifest is not None:
        return read_manifest(cfg.data.manifest, **cfg.data.read_options())
    data_dir = Path(data_dir)
    synth = synth_config(cfg)
    meta = data_dir / "synthcxr.json"
    if data_dir.is_dir() and any(data_dir.iterdir()):
        try:
            made_with = json.loads(meta.read_text()).get("config")
        except (OSError, json.JSONDecodeError, AttributeError):
            made_with = None
        if made_with != synth.to_dict():
            raise ValueError(
                f"{data_dir}: not a SynthCXR folder made with this config (seed {cfg.seed}, size "
                f"{cfg.data.image_size}, data.synth); choose another data folder or delete this one"
            )
        return read_manifest(data_dir / MANIFEST_NAME)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    generate_synthcxr(synth, data_dir, progress=progress, overwrite=True)
    return read_manifest(data_dir / MANIFEST_NAME)


def build_dataset(
    manifest: Manifest, data: DataConfig, *, train: bool, seed: int | None = None, images: bool = True
) -> Dataset:
    """Cached (decode once) or plain MONAI dataset; augmentation only for training sets. ``images=False``: the
    reports and labels alone (:class:`~flare_vlp.data.datasets.ReportDataset`), for a text-only site.

    Raises:
        ValueError: ``images`` and a report-only row (no image), naming its id and site.
    """
    from flare_vlp.data.datasets import CachedManifestDataset, ManifestDataset, ReportDataset  # MONAI: see above

    if not images:
        return ReportDataset(manifest)
    imageless = [r for r in manifest if not r.image]
    if imageless:
        r = imageless[0]
        raise ValueError(
            f"{manifest.path}: row {r.id!r} of site {r.site!r} ({r.split}) has no image, and this dataset needs "
            f"images ({len(imageless)} such rows); report-only rows are for text-only sites"
        )
    augment = data.augment and train
    if data.cache:
        return CachedManifestDataset(manifest, size=data.image_size, augment=augment, seed=seed)
    return ManifestDataset(manifest, size=data.image_size, augment=augment)


def build_tokenizer(model: ModelConfig):
    from flare_vlp.data.text import load_tokenizer  # MONAI: see above
    from flare_vlp.models import get_tokenizer_path

    return load_tokenizer(get_tokenizer_path(model.text_encoder, **model.text_kwargs))


def build_loader(
    dataset: Dataset, tokenizer, *, batch_size: int, max_length: int, shuffle: bool, seed: int = 0, images: bool = True
) -> DataLoader:
    """A seeded DataLoader with the tokenizing collate (``images=False``: report-only samples); training loaders
    drop the last partial batch."""
    import torch
    from torch.utils.data import DataLoader

    from flare_vlp.data.text import TextImageCollate  # MONAI: see above

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=shuffle,
        drop_last=shuffle,
        generator=generator,
        collate_fn=TextImageCollate(tokenizer, max_length, images=images),
    )


def build_model(model: ModelConfig, seed: int = 0) -> DualEncoder:
    """The dual encoder of the config, seeded, with ``model.frozen`` groups frozen."""
    import torch

    from flare_vlp.models import build_dual_encoder

    torch.manual_seed(seed)
    net = build_dual_encoder(
        model.image_encoder,
        model.text_encoder,
        image_kwargs=model.image_kwargs,
        text_kwargs=model.text_kwargs,
        embed_dim=model.embed_dim,
        align_block=model.align_block,
        init_temperature=model.init_temperature,
        learnable_temperature=model.learnable_temperature,
        max_logit_scale=model.max_logit_scale,
        deep_encoder_blocks=model.deep_encoder_blocks,
    )
    if model.frozen:
        net.freeze(model.frozen)
    return net


def load_model_weights(net: DualEncoder, path: str | Path) -> DualEncoder:
    """Load a run's saved weights (``models/*.safetensors``; a group subset, e.g. without a frozen text tower, is
    fine) into ``net``, as float32."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved model weights there")
    state = load_file(str(path))
    net.load_group_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    return net
