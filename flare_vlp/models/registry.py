"""Name -> factory registries for image and text encoders.

A config names its towers by string (``model.image_encoder: vit``), so the model code never branches on names:
every encoder registers itself here with a decorator, and third-party code can add its own encoder the same way
without touching flare_vlp.

Every encoder a factory returns must satisfy :class:`Encoder`: an ``nn.Module`` with an integer ``out_dim`` (the
width of its pooled output) and ``blocks()`` (its main stages in input-to-output order, so "the last k blocks" is a
well-defined parameter group, e.g. FedDRA's "deep" part).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import nn

__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "TEXT_TOKENIZER_PATHS",
    "Encoder",
    "build_image_encoder",
    "build_text_encoder",
    "get_tokenizer_path",
    "register_image_encoder",
    "register_text_encoder",
]

EncoderFactory = Callable[..., nn.Module]

IMAGE_ENCODERS: dict[str, EncoderFactory] = {}
TEXT_ENCODERS: dict[str, EncoderFactory] = {}
# text encoder name -> function(**encoder_kwargs) returning the local folder of its tokenizer
TEXT_TOKENIZER_PATHS: dict[str, Callable[..., str | Path]] = {}

# Modules whose import fills the registries; imported lazily so `registry` has no import cycle with them.
_BUILTIN_MODULES = (
    "flare_vlp.models.image_encoders",
    "flare_vlp.models.efficientnet_lite",
    "flare_vlp.models.text_encoders",
)


@runtime_checkable
class Encoder(Protocol):
    """What the dual encoder needs from a tower: a pooled ``B x out_dim`` output and an ordered list of blocks."""

    out_dim: int

    def blocks(self) -> list[nn.Module]: ...


def _register(table: dict[str, EncoderFactory], kind: str, name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if name in table and table[name] is not factory:
            raise ValueError(f"{kind} encoder {name!r} is already registered (by {table[name].__qualname__}).")
        table[name] = factory
        return factory

    return decorator


def register_image_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator registering ``factory(**kwargs) -> nn.Module`` as image encoder ``name``.

    Raises:
        ValueError: if another factory already holds ``name`` (silently replacing an encoder would make two runs
            with the same config build different models).
    """
    return _register(IMAGE_ENCODERS, "image", name)


def register_text_encoder(
    name: str, *, tokenizer_path: Callable[..., str | Path] | None = None
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator registering ``factory(**kwargs) -> nn.Module`` as text encoder ``name``.

    Args:
        name: registry name used in configs.
        tokenizer_path: ``f(**kwargs) -> path`` of the tokenizer matching the encoder built with the same kwargs,
            so the data layer tokenizes with the vocabulary the encoder embeds.
    """
    inner = _register(TEXT_ENCODERS, "text", name)

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if tokenizer_path is not None:
            TEXT_TOKENIZER_PATHS[name] = tokenizer_path
        return inner(factory)

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _lookup(table: dict[str, EncoderFactory], kind: str, name: str) -> EncoderFactory:
    _load_builtins()
    if name not in table:
        choices = sorted(table)
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown {kind} encoder {name!r}.{hint} Available: {', '.join(choices)}.")
    return table[name]


def _build(table: dict[str, EncoderFactory], kind: str, name: str, kwargs: dict) -> nn.Module:
    factory = _lookup(table, kind, name)
    try:
        encoder = factory(**kwargs)
    except TypeError as err:
        raise TypeError(f"Bad arguments for {kind} encoder {name!r} ({sorted(kwargs)}): {err}") from err
    if not isinstance(encoder, nn.Module) or not isinstance(encoder, Encoder):
        raise TypeError(
            f"{kind} encoder {name!r} built a {type(encoder).__name__}, which is not an nn.Module with `out_dim` and "
            "`blocks()`."
        )
    return encoder


def build_image_encoder(name: str, **kwargs) -> nn.Module:
    """Build the registered image encoder ``name`` (input ``B x C x H x W`` float, output ``B x out_dim``).

    Raises:
        ValueError: unknown name; the message lists the choices and the closest one.
        TypeError: kwargs the factory does not accept.
    """
    return _build(IMAGE_ENCODERS, "image", name, kwargs)


def build_text_encoder(name: str, **kwargs) -> nn.Module:
    """Build the registered text encoder ``name`` (``input_ids, attention_mask`` -> ``B x out_dim``).

    Raises:
        ValueError: unknown name; the message lists the choices and the closest one.
        TypeError: kwargs the factory does not accept.
    """
    return _build(TEXT_ENCODERS, "text", name, kwargs)


def get_tokenizer_path(name: str, **kwargs) -> str:
    """Local folder of the tokenizer that matches text encoder ``name`` built with ``kwargs``.

    Load it with ``AutoTokenizer.from_pretrained(path, local_files_only=True)``.

    Raises:
        ValueError: unknown encoder name, or an encoder registered without a tokenizer.
    """
    _lookup(TEXT_ENCODERS, "text", name)
    if name not in TEXT_TOKENIZER_PATHS:
        raise ValueError(f"Text encoder {name!r} was registered without a tokenizer_path.")
    return str(TEXT_TOKENIZER_PATHS[name](**kwargs))
