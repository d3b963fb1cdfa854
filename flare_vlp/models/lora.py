"""LoRA adapters (peft) on the towers of a model, with global + personal pairs and adapter-only state dicts.

FedOPAL (docs/methods.md §2) adapts each frozen linear layer as ``W = W0 + (alpha/r) (B_g A_g + B_p A_p)``: a global
pair that is averaged across sites and a personal pair that never leaves the site, both trained at the same time.
peft supports this directly: each adapter is injected under its own name into the same layers, and
``set_adapter([...])`` on the tuner layers activates several adapters at once (their outputs are summed, each scaled
by alpha/r) and makes them all trainable.

One adapter's tensors: :func:`adapter_state_dict` / :func:`load_adapter_state_dict` are peft's
``get_peft_model_state_dict`` / ``set_peft_model_state_dict`` (keys without the adapter name, so a site's "global"
state loads into any other site's "global" adapter), with errors that name the key. The LoRA methods' payload
(:mod:`flare_vlp.methods.lora_ft.model`) keeps the full keys instead, adapter name included, so a personal tensor can
never pass for a global one in the outgoing check.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "adapter_state_dict",
    "add_lora",
    "load_adapter_state_dict",
    "list_adapters",
    "lora_factor_pairs",
]


def _roots(model: nn.Module, towers: Sequence[str] | None) -> list[str]:
    """Module-name prefixes to search: ``{tower}_encoder`` of a dual encoder, or the whole model."""
    present = [t for t in ("image", "text") if hasattr(model, f"{t}_encoder")]
    if not towers or not present:
        return [""]
    missing = [t for t in towers if not hasattr(model, f"{t}_encoder")]
    if missing:
        raise ValueError(f"LoRA tower {missing[0]!r} not found: the model has no `{missing[0]}_encoder`.")
    return [f"{t}_encoder." for t in towers]


_ADAPTABLE = (nn.Linear, nn.Conv2d)
"""Layer types LoRA adapts: linear layers (ViT ``query`` / ``value``, MONAI's fused ``qkv``) and convolutions
(peft's Conv2d LoRA: ``A`` is a conv of the layer's kernel with ``r`` outputs, ``B`` a 1x1 conv back to the layer's
outputs; grouped / depthwise convolutions are refused: their LoRA update would not be a low-rank ``B A``)."""


def _max_rank(module: nn.Module) -> int:
    """The largest useful rank of a layer: ``min(d_out, d_in)`` with ``d_in = in_channels * kernel`` for a conv."""
    if isinstance(module, nn.Conv2d):
        return min(module.out_channels, module.in_channels * module.kernel_size[0] * module.kernel_size[1])
    return min(module.out_features, module.in_features)


def _match_targets(model: nn.Module, targets: Sequence[str], roots: list[str], r: int = 1) -> list[str]:
    found = {n: m for n, m in model.named_modules() if isinstance(m, _ADAPTABLE) and n.startswith(tuple(roots))}
    linears = list(found)
    matched: list[str] = []
    for target in targets:
        hits = [n for n in linears if n == target or n.endswith("." + target)]
        if not hits:
            short = sorted({n.rsplit(".", 1)[-1] for n in linears})
            where = "the model" if roots == [""] else " / ".join(r.rstrip(".") for r in roots)
            raise ValueError(
                f"LoRA target {target!r} matches no nn.Linear / nn.Conv2d in {where}. Such module names there "
                f"include: "
                f"{', '.join(short[:8]) or '(none)'}."
            )
        matched += [n for n in hits if n not in matched]
    for name in matched:
        module = found[name]
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(
                f"LoRA target module {name!r} is a grouped convolution (groups={module.groups}); adapt "
                "its 1x1 neighbours (e.g. `_project_conv`, `_expand_conv`) instead."
            )
        if r > _max_rank(module):
            raise ValueError(
                f"LoRA rank r={r} is larger than module {name!r} allows ({type(module).__name__} "
                f"{tuple(module.weight.shape)}: rank at most {_max_rank(module)})."
            )
    return matched


def list_adapters(model: nn.Module) -> list[str]:
    """Sorted names of the LoRA adapters present in ``model``."""
    from peft.tuners.lora import LoraLayer

    return sorted({name for m in model.modules() if isinstance(m, LoraLayer) for name in m.lora_A})


def add_lora(
    model: nn.Module,
    targets: Sequence[str] | str,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    adapter_names: Sequence[str] = ("global",),
    towers: Sequence[str] | None = ("image", "text"),
) -> list[str]:
    """Inject LoRA adapters, in place, into the ``nn.Linear`` / ``nn.Conv2d`` modules named by ``targets``.

    Every adapter of the model (those added now and any added before) ends up active and trainable, so
    ``adapter_names=("global", "personal")`` gives ``W = W0 + (alpha/r)(B_g A_g + B_p A_p)``. peft initialises each B
    at zero, so the model's output is unchanged at first.

    Args:
        model: a :class:`~flare_vlp.models.dual_encoder.DualEncoder` or any module.
        targets: module-name suffixes, e.g. ``["query", "value"]`` (BERT), ``"qkv"`` / ``"out_proj"`` (MONAI ViT).
        r: rank (default 8).
        alpha: scale numerator; the update is scaled by alpha / r (default 16).
        dropout: dropout on the adapter input (default 0).
        adapter_names: adapters to add (default ``("global",)``).
        towers: for a model with ``image_encoder`` / ``text_encoder``, adapt only these towers (default both);
            ``None`` or a model without towers: search the whole model.

    Returns:
        The names of the adapted modules.

    Side effects:
        peft freezes the base weights of the adapted model; parameters outside the adapted towers (align blocks,
        heads, temperature, a classifier) keep their ``requires_grad``. On a model without towers everything but the
        adapters is frozen.

    Raises:
        ValueError: a target that matches no ``nn.Linear`` / ``nn.Conv2d`` (the message lists names that exist), a
            bad ``r`` or one larger than a matched layer allows (named), a grouped convolution, an empty
            ``adapter_names``, or an adapter name that already exists.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import set_adapter

    targets = [targets] if isinstance(targets, str) else list(targets)
    adapter_names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
    if r < 1:
        raise ValueError(f"LoRA rank `r` must be positive, got {r}.")
    if not adapter_names or not targets:
        raise ValueError("`adapter_names` and `targets` must be non-empty.")
    existing = list_adapters(model)
    clash = [a for a in adapter_names if a in existing]
    if clash:
        raise ValueError(f"LoRA adapter {clash[0]!r} already exists (present: {', '.join(existing)}).")
    roots = _roots(model, towers)
    modules = _match_targets(model, targets, roots, r)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for name in adapter_names:
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")
        with warnings.catch_warnings():  # a second adapter on the same layers is the point here, not a mistake
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(config, model, adapter_name=name)
    set_adapter(model, list_adapters(model))  # all adapters active and trainable at once
    if roots != [""]:  # peft froze the whole model; give modules outside the towers their trainability back
        for name, param in model.named_parameters():
            if name in before and not name.startswith(tuple(roots)):
                param.requires_grad_(before[name])
    return modules


def _check_adapter(model: nn.Module, adapter: str) -> None:
    if adapter not in list_adapters(model):
        raise ValueError(f"No LoRA adapter {adapter!r} in the model (adapters: {list_adapters(model) or 'none'}).")


def adapter_state_dict(model: nn.Module, adapter: str = "global") -> dict[str, torch.Tensor]:
    """Detached copies of one adapter's tensors, keys without the adapter name (``...qkv.lora_A.weight``): peft's
    ``get_peft_model_state_dict`` (without its ``save_embedding_layers="auto"`` hub look-up).

    Raises:
        ValueError: the model has no adapter of that name; the message lists those it has.
    """
    from peft import get_peft_model_state_dict

    _check_adapter(model, adapter)
    state = get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)
    return {key: value.detach().clone() for key, value in state.items()}


def load_adapter_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], adapter: str = "global", strict: bool = True
) -> None:
    """Load tensors from :func:`adapter_state_dict` (possibly of another site) into ``adapter`` (peft's
    ``set_peft_model_state_dict``, after checks that name the key).

    Raises:
        KeyError: (strict) the first missing or unexpected key, named.
        ValueError: a shape mismatch (e.g. another rank or architecture), or an unknown adapter.
    """
    from peft import set_peft_model_state_dict

    own = adapter_state_dict(model, adapter)
    if strict:
        unexpected = [k for k in state if k not in own]
        missing = [k for k in own if k not in state]
        if unexpected or missing:
            kind, key = ("Unexpected", unexpected[0]) if unexpected else ("Missing", missing[0])
            raise KeyError(
                f"{kind} key {key!r} loading LoRA adapter {adapter!r} "
                f"({len(unexpected)} unexpected, {len(missing)} missing): another architecture or LoRA targets?"
            )
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"Shape mismatch for LoRA key {key!r}: model {tuple(own[key].shape)}, state "
                f"{tuple(value.shape)} (another rank or architecture?)"
            )
    set_peft_model_state_dict(model, {k: v for k, v in state.items() if k in own}, adapter_name=adapter)


def lora_factor_pairs(model: nn.Module, adapter: str = "global") -> list[tuple[nn.Parameter, nn.Parameter]]:
    """``(A, B)`` weights of ``adapter`` per adapted layer, in module order (A: ``r x in``, B: ``out x r``).

    The live parameters (not copies), so orthogonality regularisers between adapters backpropagate into them; a
    convolution's factors are 2-D views of them (A: ``r x (in * kh * kw)``, B: ``out x r``), so ``B A`` is the
    flattened kernel update.

    Raises:
        ValueError: the model has no adapter of that name.
    """
    from peft.tuners.lora import LoraLayer

    pairs = [
        (m.lora_A[adapter].weight.flatten(1), m.lora_B[adapter].weight.flatten(1))
        if m.lora_A[adapter].weight.dim() > 2
        else (m.lora_A[adapter].weight, m.lora_B[adapter].weight)
        for m in model.modules()
        if isinstance(m, LoraLayer) and adapter in m.lora_A
    ]
    if not pairs:
        raise ValueError(f"No LoRA adapter {adapter!r} in the model (adapters: {list_adapters(model) or 'none'}).")
    return pairs
