"""CreamFL (Yu et al., ICLR 2023, https://arxiv.org/abs/2302.08888; methods.md section 3): heterogeneous clients
(image-only, text-only and image-text sites, each with its own architecture) share only their representations of a
public image-text split; a larger server model trains on that split, ensembles the clients' representations
(global-local cross-modal ensemble) and distils towards them. Roles: ``image``, ``text``, ``image_text``.
"""

from flare_vlp.methods.creamfl.config import CreamFLConfig
from flare_vlp.methods.registry import MethodSpec, register_method

__all__ = ["CreamFLConfig"]

_CLIENT = "flare_vlp.methods.creamfl.client.CreamFLClient"

register_method(
    MethodSpec(
        "creamfl",
        CreamFLConfig,
        "flare_vlp.methods.creamfl.strategy.CreamFLStrategy",
        {"image": _CLIENT, "text": _CLIENT, "image_text": _CLIENT},
        "heterogeneous image / text / image-text clients share public-set representations; the server ensembles "
        "and distils them",
        job_name="creamfl",
        default_roles=("image_text", "image", "text"),
        job_overrides={"data": {"synth": {"public_samples": 64}}},
        evaluator="flare_vlp.experiments.federated_eval.evaluate_global_model",
        needs_splits=("public",),
    )
)
