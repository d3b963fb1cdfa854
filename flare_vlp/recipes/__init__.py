"""FLARE recipes built from the method registry, the run drivers (sim / POC / prod) and job export.

Above ``flare_vlp.fl`` in the layer order: ``fl`` never imports this package.
"""

from flare_vlp.recipes.method_recipe import MethodRecipe

__all__ = ["MethodRecipe"]
