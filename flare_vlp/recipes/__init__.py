"""FLARE recipes built from the method registry, the run drivers (sim / POC / prod / in-process) and job export.

Above ``flare_vlp.fl`` in the layer order: ``fl`` never imports this package. ``MethodRecipe`` is imported on first
use, so ``flare_vlp.recipes.run`` with ``env="inprocess"`` runs where FLARE is not installed (e.g. a GPU box that
only runs a benchmark's seed grid).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MethodRecipe"]


def __getattr__(name: str) -> Any:
    if name == "MethodRecipe":
        from flare_vlp.recipes.method_recipe import MethodRecipe

        return MethodRecipe
    raise AttributeError(f"module 'flare_vlp.recipes' has no attribute {name!r}")
