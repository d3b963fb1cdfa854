"""Experiment configuration: YAML -> frozen, validated dataclasses.

One file per experiment; every hyper-parameter has a documented default (``metadata["help"]``). Loading is strict:
an unknown key, a wrong type or an out-of-range value fails with an error that names the dotted key path (and
suggests the closest valid key), because a typo that silently falls back to a default wastes a whole federated run.
Named presets ship inside the package (``flare_vlp/configs/*.yaml``) and are accepted wherever a path is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "load_config",
    "list_presets",
    "preset_path",
    "config_to_dict",
    "config_from_dict",
    "merge_overrides",
]


class ConfigError(ValueError):
    """A config that cannot be used; the message starts with the dotted key path."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"`{key}` {message}")


@dataclass(frozen=True)
class DataConfig:
    """Where the image-report pairs come from and how they are preprocessed."""

    manifest: str | None = _f(None, "manifest path (JSONL/CSV); null = generate SynthCXR into the run's data folder")
    synth: dict = _f(
        {},
        "SynthCXR settings when manifest is null, validated by `flare_vlp.data.synthetic.SynthConfig` (errors name "
        "`data.synth.<key>`; unseen_site defaults to true here; seed and size come from `seed` and `data.image_size`)",
    )
    image_size: int = _f(64, "square image side the loaders resize to")
    augment: bool = _f(True, "random affine + intensity augmentation on training images")
    cache: bool = _f(True, "decode every image once into memory (CachedManifestDataset)")
    max_text_length: int = _f(64, "report tokens kept by the tokenizer")
    allow_empty_report: bool = _f(False, "accept image-only rows (e.g. CheXpert)")
    allow_empty_image: bool = _f(False, "accept report-only rows without an image (only text-only sites train on them)")

    def read_options(self) -> dict[str, bool]:
        """The :func:`~flare_vlp.data.manifest.read_manifest` options this config sets."""
        return {"allow_empty_report": self.allow_empty_report, "allow_empty_image": self.allow_empty_image}

    def __post_init__(self) -> None:
        _check(self.image_size >= 16, "data.image_size", f"must be >= 16, got {self.image_size}")
        _check(self.max_text_length >= 8, "data.max_text_length", f"must be >= 8, got {self.max_text_length}")


@dataclass(frozen=True)
class ModelConfig:
    """The CLIP-style dual encoder: which towers, the align blocks, heads and temperature."""

    image_encoder: str = _f(
        "cnn", "image encoder registry name (cnn, vit, vit_tiny, resnet10, efficientnet_lite0, ...)"
    )
    image_kwargs: dict = _f({}, "keyword arguments of the image encoder (e.g. path for hf_vision)")
    text_encoder: str = _f("minilm", "text encoder registry name (minilm, tiny_bert, hf_text)")
    text_kwargs: dict = _f({}, "keyword arguments of the text encoder (e.g. path for hf_text)")
    embed_dim: int = _f(128, "shared embedding dimension")
    align_block: bool = _f(True, "a residual 'align' block per tower before the projection head")
    deep_encoder_blocks: int = _f(
        0, "last blocks of each encoder that also belong to the 'deep' parameter group (align blocks + heads + tau)"
    )
    init_temperature: float = _f(0.07, "initial softmax temperature tau")
    learnable_temperature: bool = _f(True, "learn log(1/tau), CLIP-style, clamped at max_logit_scale")
    max_logit_scale: float = _f(100.0, "upper clamp of 1/tau")
    frozen: list = _f(["text_encoder"], "parameter groups frozen for the whole run")

    def __post_init__(self) -> None:
        _check(self.embed_dim >= 2, "model.embed_dim", f"must be >= 2, got {self.embed_dim}")
        _check(
            0 < self.init_temperature < 1, "model.init_temperature", f"must be in (0, 1), got {self.init_temperature}"
        )
        _check(self.deep_encoder_blocks >= 0, "model.deep_encoder_blocks", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """One local training loop for every method (centralized, local-only and each FL site)."""

    epochs: float = _f(5.0, "passes over the (site's) training data; ignored when steps is set")
    steps: int | None = _f(None, "optimizer steps (overrides epochs)")
    batch_size: int = _f(64, "images per batch")
    lr: float = _f(1e-3, "peak AdamW learning rate")
    weight_decay: float = _f(0.05, "AdamW weight decay")
    warmup_fraction: float = _f(0.1, "fraction of the steps with linear warmup")
    schedule: Literal["cosine", "constant"] = _f("cosine", "learning-rate decay after warmup")
    min_lr_ratio: float = _f(0.05, "final lr / peak lr for the cosine schedule")
    federated_schedule: Literal["run", "round"] = _f(
        "run",
        "federated sites: one warmup + decay across all rounds, like the centralized run (run), or a fresh one every "
        "round (round: with few steps per round it skips warmup and halves the mean lr)",
    )
    grad_clip: float | None = _f(1.0, "max global grad norm (null = no clipping)")
    positives: Literal["labels", "dedupe", "diagonal"] = _f(
        "labels", "contrastive positives: identical label vectors (labels), de-duplicate (dedupe), plain CLIP"
    )
    amp: Literal["auto", "off", "bf16"] = _f("auto", "bf16 autocast: auto = on GPU only")
    log_every: int = _f(20, "steps between logged loss lines")
    warm_frozen: dict = _f(
        {}, "freezing schedule: group -> optimizer steps it stays frozen at the start (e.g. {image_encoder: 100})"
    )
    bn_recalibration_batches: int = _f(
        16, "batches (at most one pass) to re-estimate BatchNorm statistics after training (precise BN; 0 = EMA)"
    )

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "train.epochs", f"must be > 0, got {self.epochs}")
        _check(self.steps is None or self.steps > 0, "train.steps", f"must be > 0 or null, got {self.steps}")
        _check(
            self.batch_size >= 2,
            "train.batch_size",
            f"must be >= 2 (contrastive needs negatives), got {self.batch_size}",
        )
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.warmup_fraction < 1, "train.warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        for group, n in self.warm_frozen.items():
            _check(isinstance(n, int) and n >= 0, f"train.warm_frozen.{group}", f"must be an int >= 0, got {n!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol: zero-shot prompts, retrieval, linear probe (see docs/evaluation)."""

    batch_size: int = _f(128, "images per evaluation batch")
    retrieval_k: list = _f([1, 5, 10], "K of recall@K")
    retrieval_hit: Literal["labels", "exact"] = _f("labels", "a hit = same label vector (labels) or the paired report")
    linear_probe: bool = _f(True, "fit a logistic-regression probe on frozen image features")
    probe_c: float = _f(1.0, "inverse L2 strength of the probe")
    probe_samples: int = _f(3000, "pooled training images the probe is fitted on (the same subset for every method)")
    untrained_floor: bool = _f(True, "also evaluate a randomly initialised model as the floor")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: seed, data, model, local training, evaluation."""

    name: str = _f("experiment", "run name")
    seed: int = _f(0, "one seed for data generation, partitioning, init and sampling")
    data: DataConfig = _f(None, "data section")
    model: ModelConfig = _f(None, "model section")
    train: TrainConfig = _f(None, "local training section")
    eval: EvalConfig = _f(None, "evaluation section")
    fl: dict = _f(
        {},
        "federated runs: rounds, local_steps, device, and per method name its settings (e.g. feddra: {rho: 0.1}); "
        "validated against the method registry (flare_vlp.methods.registry.fl_settings)",
    )

    def __post_init__(self) -> None:
        for name, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, cls())


# ----------------------------------------------------------------------------------------------------------------


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, tp)


RETIRED: dict[str, tuple[Any, str]] = {
    "train.prox_mu": (
        0.0,
        "the proximal weight is a method setting now: FedProx's `fl.fedprox.mu` (flare-vlp run --method fedprox --mu)",
    ),
}
"""Keys that left the experiment config -> (their old default, where the setting lives now). A file that still holds
the old default (every run folder's config.yaml written before) loads, the key ignored; any other value is refused
with the pointer, never silently dropped."""


def config_from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types by dotted path."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"`{prefix.rstrip('.') or '<root>'}` must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names and path in RETIRED:
            default, moved = RETIRED[path]
            if value == default and not isinstance(value, bool):
                continue
            raise ConfigError(f"`{path}` is no longer an experiment setting ({value!r}): {moved}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean `{prefix}{close[0]}`?)" if close else ""
            raise ConfigError(f"`{path}` is not a known key{hint}; valid keys: {names}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = config_from_dict(tp, value, prefix=f"{path}.")
            continue
        if isinstance(value, str) and (tp is float or float in typing.get_args(tp)):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-3 (no dot) as a string
                value = float(value)
        if not _type_ok(value, tp):
            raise ConfigError(f"`{path}` expects {_type_name(tp)}, got {type(value).__name__} {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # validation of a section owned by another module (e.g. data.synth)
        raise ConfigError(f"`{prefix.rstrip('.') or cls.__name__}`: {e}") from None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (for YAML dumps and run folders)."""
    return dataclasses.asdict(cfg)


def list_presets() -> list[str]:
    """Names of the configs shipped in ``flare_vlp/configs``."""
    folder = resources.files("flare_vlp") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    folder = resources.files("flare_vlp") / "configs"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"no config file or preset named '{name}'{hint}; presets: {list_presets()}")
    return Path(str(path))


def load_config(name_or_path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Load a preset name (``tiny``, ``demo``, ``bench``) or a YAML path, then apply nested ``overrides``."""
    path = Path(name_or_path)
    if not path.is_file() and not path.suffix:
        path = preset_path(str(name_or_path))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if overrides:
        raw = merge_overrides(raw, overrides)
    try:
        return config_from_dict(ExperimentConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def merge_overrides(base: dict | None, extra: dict | None) -> dict:
    """``extra`` deep-merged over ``base`` (nested config overrides; ``None`` counts as empty)."""
    out = dict(base or {})
    for k, v in (extra or {}).items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
