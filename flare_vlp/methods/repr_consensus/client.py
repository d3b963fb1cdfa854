"""The representation-consensus site: a private dual encoder of its own architecture that never leaves the site.

Per round: train contrastively on the private pairs (the same ``train_loop`` and run-wide lr schedule as every VLP
site), pull the representations of the round's public samples towards the server's consensus (``kd_steps`` steps of
``kd_weight * mean ||z - z_consensus||^2`` per shared modality), then reply with the representations of those public
samples only, in the modalities of the role: ``image_text`` sites send image and text, ``image`` sites send image.
The whole model is personal state: it lives in the site store (entry ``model``, tagged with a fingerprint of the
model config) after every round, and a restarted site or job continues from it.
"""

from __future__ import annotations

import hashlib
import json

import torch

from flare_vlp.data.keys import SampleKey
from flare_vlp.experiments.site_data import SiteData, load_site_data
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext, run_schedule_window
from flare_vlp.methods.messages import Message, PayloadKind, Representations, Task, TaskMeta
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.public_set import PublicSet
from flare_vlp.training import train_loop
from flare_vlp.training.objectives import ContrastiveObjective, batch_to_device

__all__ = ["ReprConsensusClient", "ROLE_MODALITIES"]

ROLE_MODALITIES = {"image_text": ("image", "text"), "image": ("image",)}
STORE_ENTRY = "model"


def model_fingerprint(cfg) -> str:
    """A short hash of the model section: a stored model of another architecture is refused, not loaded."""
    return hashlib.sha256(json.dumps(cfg.model.__dict__, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ReprConsensusClient(ClientAlgo):
    """A site of the representation-consensus method.

    The method's ``kd_weight`` and ``kd_steps`` arrive as task options.

    Args:
        modalities: the modalities this site shares (default: those of its role).
    """

    def __init__(self, modalities: list[str] | None = None):
        self._modalities = tuple(modalities) if modalities else None

    def initialize(self, site: SiteContext) -> None:
        self.site, self.cfg = site, site.cfg
        if self._modalities is None:
            if site.role not in ROLE_MODALITIES:
                raise ValueError(f"site {site.site!r}: unknown role {site.role!r}; roles {sorted(ROLE_MODALITIES)}")
            self._modalities = ROLE_MODALITIES[site.role]
        self.data: SiteData = load_site_data(
            site.cfg, site.site, data_dir=site.data_dir, manifest=site.manifest, site_map=site.site_map
        )
        self._public = PublicSet.load(site.cfg, data_dir=site.data_dir, manifest=site.manifest)
        self._fingerprint = model_fingerprint(site.cfg)
        self.rounds_done = 0
        stored = site.store.load(STORE_ENTRY, expect={"model": self._fingerprint})
        if stored is not None:
            tensors, meta = stored
            self.data.model.load_state_dict(tensors, strict=True)
            self.rounds_done = int(meta.get("rounds_done", 0))
            site.logger.info(f"site {site.site!r}: restored its model from the site store ({self.rounds_done} rounds)")

    def declaration(self) -> Declaration:
        return Declaration(
            receives=frozenset({PayloadKind.REPRESENTATIONS}),
            trains=("the whole private dual encoder",),
            shares=frozenset({PayloadKind.REPRESENTATIONS, PayloadKind.METRICS}),
            shareable_keys=None,
            private_keys=frozenset(self.data.model.state_dict()),
            modalities=frozenset(self._modalities),
        )

    # -- tasks ------------------------------------------------------------------------------------------------

    def _public_loader(self, ids: list[str]):
        cfg = self.cfg
        return self._public.loader(
            ids, self.data.tokenizer, batch_size=cfg.train.batch_size, max_length=cfg.data.max_text_length
        )

    def _encode(self, batch: dict) -> dict[str, torch.Tensor]:
        model = self.data.model
        out = {"image": model.encode_image(batch[SampleKey.IMAGE])}
        if "text" in self._modalities:
            out["text"] = model.encode_text(batch[SampleKey.INPUT_IDS], batch[SampleKey.ATTENTION_MASK])
        return out

    def _distil(self, ids: list[str], targets: dict[str, torch.Tensor], weight: float, steps: int) -> float:
        """``steps`` passes of ``weight * mean ||z - target||^2`` over the round's public samples."""
        shared = [m for m in self._modalities if m in targets]
        if not shared or steps == 0 or weight == 0:
            return float("nan")
        model, device = self.data.model, self.site.device
        model.train().to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.train.lr, weight_decay=0.0)
        row = {sample: i for i, sample in enumerate(ids)}
        last = float("nan")
        for _ in range(steps):
            for batch in self._public_loader(ids):
                batch = batch_to_device(batch, device)
                rows = torch.tensor([row[str(i)] for i in batch[SampleKey.ID]])
                z = self._encode(batch)
                loss = sum(((z[m] - targets[m][rows].to(device)) ** 2).sum(-1).mean() for m in shared)
                loss = weight * loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                last = float(loss.detach())
        return last

    @torch.no_grad()
    def _represent(self, ids: list[str]) -> dict[str, torch.Tensor]:
        model, device = self.data.model, self.site.device
        model.eval().to(device)
        parts: dict[str, list] = {m: [] for m in self._modalities}
        for batch in self._public_loader(ids):
            z = self._encode(batch_to_device(batch, device))
            for m in self._modalities:
                parts[m].append(z[m].float().cpu())
        return {m: torch.cat(v).numpy() for m, v in parts.items()}

    def train(self, task: Task, message: Message, should_abort: ShouldAbort) -> Message | None:
        reps = message.representations
        self._public.check_ids(self.site.site, reps.ids if reps is not None else [])
        steps = task.local_steps or self.site.local_steps or len(self.data.train_loader)
        result = train_loop(
            self.data.model,
            self.data.train_loader,
            self.cfg.train,
            objective=ContrastiveObjective(self.cfg.train.positives),
            device=self.site.device,
            steps=steps,
            seed=self.cfg.seed + int(task.round),
            should_abort=should_abort,
            schedule_window=run_schedule_window(self.cfg.train, task, steps),
        )
        if result.aborted:
            return None
        targets = {m: torch.as_tensor(a) for m, a in reps.arrays.items()}
        options = dict(task.options)
        kd_loss = self._distil(
            list(reps.ids), targets, float(options.get("kd_weight", 1.0)), int(options.get("kd_steps", 0))
        )
        arrays = self._represent(list(reps.ids))
        self.data.model.cpu()
        self.rounds_done += 1
        self.site.store.save(
            STORE_ENTRY,
            self.data.model.state_dict(),
            {"model": self._fingerprint, "rounds_done": self.rounds_done, "role": self.site.role},
        )
        metrics = {"train_loss": result.final_loss, "kd_loss": kd_loss, "steps": result.steps,
                   "lr": result.last_logs.get("lr", float("nan")), "rounds_done": self.rounds_done}  # fmt: skip
        self.site.stream("round", metrics, int(task.round))
        return Message(
            representations=Representations(list(reps.ids), arrays),
            metrics=metrics,
            meta={TaskMeta.N_SAMPLES: self.data.n_train, TaskMeta.SITE: self.data.data_site},
        )

    def evaluate(self, task: Task, message: Message) -> Message:
        """Contrastive val loss of the site's own model (the received message carries no weights)."""
        from flare_vlp.training.held_out import mean_loss

        if self.data.val_loader is None:
            return Message(metrics={"val_loss": float("nan")})
        loss = mean_loss(
            self.data.model, self.data.val_loader, ContrastiveObjective(self.cfg.train.positives), self.site.device
        )
        return Message(metrics={"val_loss": loss, "n_val": self.data.n_val})

    def get_weights(self, task: Task) -> Message:
        return Message()  # nothing of this method's model is shareable
