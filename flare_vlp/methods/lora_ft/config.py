"""Typed configs of FedOPAL and its baselines: one settings class, one variant per registered method.

The variant decides which adapters exist at a site, which of their tensors are shared (n_k-averaged) and which stay
in the site store (docs/methods.md section 2): the client algorithm and the strategy read it from the config (the
strategy sends it to the sites as task options), so the methods differ only in their registry entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from flare_vlp.methods.registry import check, setting

__all__ = ["LoraFTConfig", "VARIANTS", "config_class"]

VARIANTS: dict[str, dict[str, object]] = {
    # adapters present at a site; which LoRA factors of the "global" adapter travel; which are frozen
    "fedopal": {"adapters": ("global", "personal"), "shared": ("A", "B"), "frozen": ()},
    "local_lora": {"adapters": ("personal",), "shared": (), "frozen": ()},
    "fedavg_lora": {"adapters": ("global",), "shared": ("A", "B"), "frozen": ()},
    "ffa_lora": {"adapters": ("global",), "shared": ("B",), "frozen": ("A",)},
    "fedsa_lora": {"adapters": ("global",), "shared": ("A",), "frozen": ()},
    "fedavg_full": {"adapters": (), "shared": ("full",), "frozen": ()},
}
"""Per method: the LoRA adapters of a site, the shared factors of ``global`` (``full``: every trainable tensor of
the image tower and the head, as full fine-tuning FedAvg), and the factors that never train (FFA-LoRA's A)."""


@dataclass(frozen=True)
class LoraFTConfig:
    """Personalized fine-tuning of a frozen image tower with LoRA for multi-label finding classification.

    Args:
        targets: module-name suffixes LoRA adapts (``[]``: the encoder's default, see
            :func:`flare_vlp.methods.lora_ft.model.default_targets`).
        rank / alpha: LoRA rank r and scale numerator (update scaled by alpha / r).
        orth_mu: weight of the orthogonality regulariser (FedOPAL only; 0 switches it off). Not FedProx's ``mu``:
            a flag name means one thing across methods (``flare-vlp run --orth-mu``).
        orthogonality: ``weights`` / ``subspace`` / ``representations`` (docs/methods.md section 2).
        lr: AdamW learning rate of adapters and head.
        weighting: ``samples`` (n_k) or ``uniform`` averaging of the shared tensors.
        init_from: start the tower from a VLP model this project trained: a FedDRA / FedAvg run folder (its
            ``models/global.safetensors``) or such a file; ``""``: the config's own initialisation (ImageNet).
    """

    variant: ClassVar[str] = "fedopal"

    targets: list = setting([], "LoRA target module suffixes ([]: the image encoder's default)")
    rank: int = setting(4, "LoRA rank r")
    alpha: float = setting(8.0, "LoRA alpha (update scaled by alpha / r)")
    orth_mu: float = setting(0.1, "FedOPAL orthogonality weight mu of R_orth (0: off)")
    orthogonality: Literal["weights", "subspace", "representations"] = setting(
        "weights", "R_orth kind: weights, subspace or representations"
    )
    lr: float = setting(5e-3, "AdamW learning rate of the adapters and the head")
    init_from: str = setting("", "VLP run folder or .safetensors whose dual encoder the tower starts from")
    weighting: Literal["samples", "uniform"] = setting("samples", "site weights: n_k (samples) or 1/K (uniform)")

    def __post_init__(self) -> None:
        check(self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        check(math.isfinite(self.alpha) and self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        check(math.isfinite(self.orth_mu) and self.orth_mu >= 0, "orth_mu", f"must be >= 0, got {self.orth_mu}")
        from flare_vlp.algorithms.orthogonality import ORTHOGONALITY_KINDS  # torch: only when a config is built

        check(self.orthogonality in ORTHOGONALITY_KINDS, "orthogonality", f"must be one of {ORTHOGONALITY_KINDS}")
        check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(
            self.weighting in ("samples", "uniform"), "weighting", f"must be samples or uniform, got {self.weighting}"
        )
        check(all(isinstance(t, str) and t for t in self.targets), "targets", "must be non-empty module-name strings")

    def options(self) -> dict:
        """The task options every site gets (plain values)."""
        return {"variant": self.variant, "targets": list(self.targets), "rank": int(self.rank),
                "alpha": float(self.alpha), "orth_mu": float(self.orth_mu), "orthogonality": self.orthogonality,
                "lr": float(self.lr), "init_from": self.init_from}  # fmt: skip


def config_class(variant: str) -> type:
    """The config dataclass of ``variant`` (same fields, its own ``variant``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown LoRA fine-tuning variant {variant!r}; variants: {sorted(VARIANTS)}")
    name = "".join(p.capitalize() for p in variant.split("_")) + "Config"
    return dataclass(frozen=True)(type(name, (LoraFTConfig,), {"variant": variant, "__module__": __name__}))
