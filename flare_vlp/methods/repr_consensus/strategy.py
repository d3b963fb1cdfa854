"""The representation-consensus server: per public sample and modality, the mean of the sites' representations.

The server draws ``public_samples`` public ids once (seeded by the experiment seed), sends them every round with the
current consensus of those ids (none before the first round), checks each reply's representations
(the ids asked, in order; dimension ``model.embed_dim``; finite) and averages every modality over the sites that
sent it. A modality no site sent this round keeps its previous consensus. The server keeps no model weights: its
state is the consensus bank, persisted with the round and restored on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flare_vlp.methods.messages import Message, Representations, Task, TaskName
from flare_vlp.methods.payload import validate_representations
from flare_vlp.methods.public_set import sample_public_ids
from flare_vlp.methods.strategy import ServerStrategy

__all__ = ["ReprConsensusStrategy", "MODALITIES"]

MODALITIES = ("image", "text")


class ReprConsensusStrategy(ServerStrategy):
    """Consensus of public-set representations (see the module docstring).

    Args:
        config: :class:`~flare_vlp.methods.repr_consensus.config.ReprConsensusConfig`.
    """

    verb = "averaged the representations of"

    def setup(self, params) -> None:
        self._bank: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODALITIES}  # modality -> id -> vector
        public = self.ctx.public_ids()  # the sites read the same public split
        self._ids = sample_public_ids(public, self.config.public_samples, self.ctx.cfg.seed)  # exchanged every round

    def round_tasks(self, rnd: int) -> list[Task]:
        options = {"kd_weight": float(self.config.kd_weight), "kd_steps": int(self.config.kd_steps)}
        return [Task(TaskName.TRAIN, rnd, self.ctx.num_rounds, options=options)]

    def global_message(self, task: Task) -> Message:
        ids = self._ids
        arrays = {}
        for modality, bank in self._bank.items():
            if ids and all(i in bank for i in ids):
                arrays[modality] = np.stack([bank[i] for i in ids]).astype(np.float32)
        return Message(representations=Representations(ids, arrays))

    def check_reply(self, task: Task, site: str, reply: Message) -> None:
        dims = dict.fromkeys(MODALITIES, self.ctx.cfg.model.embed_dim)
        validate_representations(site, reply.representations, self._ids, dims)

    def combine(self, task: Task, replies: Mapping[str, Message]) -> dict[str, Any]:
        ids = self._ids
        contributors: dict[str, list[str]] = {}
        for modality in MODALITIES:
            stacks = [
                (s, r.representations.arrays[modality])
                for s, r in replies.items()
                if modality in r.representations.arrays
            ]
            if not stacks:
                continue
            mean = np.mean(np.stack([np.asarray(a, dtype=np.float64) for _, a in stacks]), axis=0)
            for i, sample in enumerate(ids):
                self._bank[modality][sample] = mean[i].astype(np.float32)
            contributors[modality] = [s for s, _ in stacks]
        if not contributors:
            raise ValueError("no reply carried any representation")
        return {"modalities": contributors, "public": len(ids)}

    def global_weights(self) -> dict[str, np.ndarray]:
        return {}

    def state(self) -> dict:
        return {m: {i: v.tolist() for i, v in bank.items()} for m, bank in self._bank.items()}

    def restore(self, state: Mapping) -> None:
        for modality in MODALITIES:
            self._bank[modality] = {i: np.asarray(v, np.float32) for i, v in (state.get(modality) or {}).items()}
