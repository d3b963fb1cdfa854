"""The CreamFL server: a (larger) dual encoder trained on the public split, the global-local cross-modal ensemble
of the clients' public-set representations, and distillation towards it (methods.md section 3).

Per round:

1. :meth:`CreamFLStrategy.prepare_round`: one contrastive pass of the server model over the whole public split
   (the experiment's ``train`` settings; one lr schedule across the rounds), then its global image and text
   representations of the round's public subset (``public_samples`` ids, a fresh draw seeded by seed + round),
   broadcast to every client;
2. each reply is checked (:func:`~flare_vlp.methods.payload.validate_representations`): the ids asked, in order; the
   server's ``embed_dim``; finite; exactly the modalities of the site's role;
3. :meth:`combine`: the ensemble (:func:`~flare_vlp.algorithms.ensemble.cross_modal_ensemble`, per public sample a
   softmax over the clients that sent that modality) and one distillation pass over the subset,
   ``kd_weight * (MSE(f_img, I) + MSE(f_txt, T))``. A side no client sent this round (only image-only sites, say) is
   not distilled; the other side is (the round is logged with the clients of each side). The reference code fails
   on such a round.

The server's global weights (its model minus the config's frozen towers) are persisted every round and are the run's
model: the run evaluator scores the server model on the held-out test split.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from flare_vlp.algorithms.aggregate import UpdateValidationError
from flare_vlp.algorithms.creamfl import distillation_loss
from flare_vlp.algorithms.ensemble import cross_modal_ensemble
from flare_vlp.experiments.builders import build_model, build_tokenizer
from flare_vlp.methods.creamfl.config import CLIENT_OPTIONS
from flare_vlp.methods.creamfl.models import ROLE_MODALITIES
from flare_vlp.methods.messages import Message, Representations, Task, TaskMeta, TaskName
from flare_vlp.methods.payload import validate_representations
from flare_vlp.methods.public_set import PublicSet, sample_public_ids
from flare_vlp.methods.strategy import ServerStrategy
from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy, to_torch
from flare_vlp.training import train_loop
from flare_vlp.training.loop import set_train_mode
from flare_vlp.training.objectives import ContrastiveObjective, batch_to_device
from flare_vlp.training.schedule import round_window
from flare_vlp.training.step import optimizer_step

__all__ = ["CreamFLStrategy"]

MODALITIES = ("image", "text")


class CreamFLStrategy(ServerStrategy):
    """CreamFL's server (see the module docstring).

    Args:
        config: :class:`~flare_vlp.methods.creamfl.config.CreamFLConfig`.
    """

    verb = "ensembled and distilled the representations of"

    def setup(self, params: Mapping[str, np.ndarray] | None) -> None:
        cfg = self.ctx.cfg
        self.model = build_model(cfg.model, seed=cfg.seed)
        self._keys = exchanged_keys(self.model, DEFAULT_GROUPS, cfg.model.frozen)
        if params:
            self.model.load_group_state_dict(to_torch(params), strict=True)
        self.public = PublicSet.load(cfg, data_dir=self.ctx.data_dir, manifest=self.ctx.manifest)
        self.tokenizer = build_tokenizer(cfg.model)
        self._round: tuple[int, list[str], dict[str, np.ndarray], float] | None = None

    # -- step 1: the server's public pass and its global representations ------------------------------------

    def _loader(self, ids: list[str], shuffle: bool, seed: int = 0):
        return self.public.loader(ids, self.tokenizer, self.ctx.cfg, shuffle=shuffle, seed=seed)

    def train_public(self, rnd: int) -> float:
        """One contrastive pass of the server model over the whole public split (``server_steps`` if set);
        returns its last loss. Also what the public-only baseline runs alone, round after round."""
        cfg = self.ctx.cfg
        train = cfg.train if self.config.server_lr is None else dataclasses.replace(cfg.train, lr=self.config.server_lr)
        loader = self._loader(self.public.ids, shuffle=True, seed=cfg.seed + rnd)
        steps = self.config.server_steps or len(loader)
        result = train_loop(
            self.model, loader, train, objective=ContrastiveObjective(train.positives), steps=steps,
            seed=cfg.seed + rnd, schedule_window=round_window(rnd, self.ctx.num_rounds, steps),
        )  # fmt: skip
        return result.final_loss

    def represent(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The server model's l2-normalised image and text representations of the public samples ``ids``."""
        return self.public.represent(self.model, ids, self.tokenizer, self.ctx.cfg, _embed)

    def prepare_round(self, rnd: int) -> tuple[list[str], dict[str, np.ndarray]]:
        """Train on the public split, then represent the round's public subset (once per round)."""
        if self._round is None or self._round[0] != rnd:
            loss = self.train_public(rnd)
            ids = sample_public_ids(self.public.ids, self.config.public_samples, self.ctx.cfg.seed + rnd)
            self._round = (rnd, ids, self.represent(ids), loss)
        return self._round[1], self._round[2]

    # -- the platform's round ---------------------------------------------------------------------------------

    def round_tasks(self, rnd: int) -> list[Task]:
        options = {key: getattr(self.config, key) for key in CLIENT_OPTIONS}
        return [Task(TaskName.TRAIN, rnd, self.ctx.num_rounds, options=options)]

    def global_message(self, task: Task) -> Message:
        ids, reps = self.prepare_round(task.round)
        return Message(representations=Representations(list(ids), {m: a.copy() for m, a in reps.items()}))

    def check_reply(self, task: Task, site: str, reply: Message) -> None:
        role = reply.meta.get(TaskMeta.ROLE)
        if role not in ROLE_MODALITIES:
            raise UpdateValidationError(
                f"site {site!r}: role {role!r} is not a CreamFL role ({sorted(ROLE_MODALITIES)})", site
            )
        ids, _ = self.prepare_round(task.round)
        dims = dict.fromkeys(MODALITIES, self.model.embed_dim)
        validate_representations(site, reply.representations, ids, dims, require=ROLE_MODALITIES[role])
        extra = sorted(set(reply.representations.arrays) - set(ROLE_MODALITIES[role]))
        if extra:
            raise UpdateValidationError(f"site {site!r}: role {role!r} has no {extra} modality to send", site)

    def combine(self, task: Task, replies: Mapping[str, Message]) -> dict[str, Any]:
        ids, reps = self.prepare_round(task.round)
        per_side = {m: {s: r.representations.arrays[m] for s, r in replies.items() if m in r.representations.arrays}
                    for m in MODALITIES}  # fmt: skip
        targets = cross_modal_ensemble(per_side["image"], per_side["text"], reps["image"], reps["text"])
        kd = self.distil(ids, {"image": targets.image, "text": targets.text}, task.round)
        up = sum(int(np.asarray(a).nbytes) for r in replies.values() for a in r.representations.arrays.values())
        down = sum(int(a.nbytes) for a in reps.values()) * len(replies)
        return {
            "image_clients": list(targets.image_clients), "text_clients": list(targets.text_clients),
            "server_loss": self._round[3], "kd_loss": kd, "public": len(ids), "bytes_up": up, "bytes_down": down,
        }  # fmt: skip

    def distil(self, ids: list[str], targets: Mapping[str, np.ndarray | None], rnd: int) -> float:
        """One pass over the public subset of ``kd_weight * sum_side MSE(f_side(x_j), target_j)``; sides whose
        target is ``None`` (no client sent that modality) are left out. Returns the mean loss (NaN: nothing done)."""
        sides = {m: torch.as_tensor(t, dtype=torch.float32) for m, t in targets.items() if t is not None}
        if not sides or self.config.kd_weight == 0:
            return math.nan
        cfg = self.ctx.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.config.server_lr or cfg.train.lr
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
        set_train_mode(self.model)
        row = {sample: i for i, sample in enumerate(ids)}

        def forward(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
            rows = torch.tensor([row[str(i)] for i in batch["id"]])
            loss = torch.zeros(())
            if "image" in sides:
                loss = loss + distillation_loss(self.model.encode_image(batch["image"]), sides["image"][rows])
            if "text" in sides:
                z = self.model.encode_text(batch["input_ids"], batch["attention_mask"])
                loss = loss + distillation_loss(z, sides["text"][rows])
            return self.config.kd_weight * loss, {}

        losses = []
        for step, batch in enumerate(self._loader(ids, shuffle=False)):
            loss, _ = optimizer_step(
                functools.partial(forward, batch_to_device(batch, "cpu")), params=params, optimizer=optimizer,
                cfg=cfg.train, device="cpu", step=step, where=f"CreamFL server distillation, round {rnd}: ",
            )  # fmt: skip
            losses.append(float(loss.detach()))
        self.model.eval()
        return float(np.mean(losses))

    def global_weights(self) -> dict[str, np.ndarray]:
        state = self.model.state_dict()
        return to_numpy({k: state[k] for k in self._keys})


def _embed(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """The server model's image and text representations of ``batch``."""
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    return {"image": out.image_embeds, "text": out.text_embeds}
