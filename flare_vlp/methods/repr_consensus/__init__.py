"""Representation consensus: heterogeneous sites (their own architectures, image-text or image-only) that share
only representations of a public split; the server averages them per public sample and the sites distil towards
the consensus. The platform's stand-in for CreamFL's shape (not CreamFL itself: no server model, no contrastive
ensemble weights); its tests cover per-site roles, representation payloads and personal state in the site store.
"""

from flare_vlp.methods.registry import MethodSpec, register_method
from flare_vlp.methods.repr_consensus.config import ReprConsensusConfig

__all__ = ["ReprConsensusConfig"]

_CLIENT = "flare_vlp.methods.repr_consensus.client.ReprConsensusClient"

register_method(
    MethodSpec(
        "repr_consensus",
        ReprConsensusConfig,
        "flare_vlp.methods.repr_consensus.strategy.ReprConsensusStrategy",
        {"image_text": _CLIENT, "image": _CLIENT},
        "sites of different architectures share only public-set representations; the server averages them",
    )
)
