"""The CreamFL client: a private model of its own architecture and modality that never leaves the site.

Per round (methods.md section 3, step 2-3; the reference's ``MMClientTrainer`` order):

1. receive the server's global image and text representations of the round's public subset;
2. keep its own round-start representations of that subset (the intra-modal negatives, ``i_old``);
3. train on its private data with the role's task: ``image`` sites classify findings from the image, ``text``
   sites from the report text (BCE, :class:`~flare_vlp.methods.creamfl.models.FindingsObjective`), ``image_text``
   sites train contrastively (the same ``train_loop`` and objective as every VLP site);
4. ``reg_steps`` steps over the public subset (default: one pass in order; otherwise passes reshuffled with a
   seeded draw each), at the lr its private pass ended at (``reg_lr: schedule``, the reference's one optimiser and
   schedule for both passes; ``base``: ``train.lr``), of ``reg_weight * (inter + intra)`` per modality it has:
   inter-modal against the WHOLE bank of global representations of the other modality (target: the sample's public
   index), intra-modal MOON style (global positive, own round-start negative), ``tau_r`` 0.5;
5. reply with its representations of the public subset in its modalities only.

The whole model (and head) is personal state (:class:`~flare_vlp.methods.site_store.PersonalState`: entry ``model``,
tagged with a fingerprint of the role and architecture), restored when the site or job restarts. The regulariser
steps through :func:`~flare_vlp.training.step.optimizer_step` (``train.amp``, ``train.grad_clip``, a finite loss), as
the private pass does through ``train_loop``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from flare_vlp.algorithms.creamfl import inter_modal_contrast, intra_modal_contrast
from flare_vlp.experiments.site_data import SiteData
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext, run_schedule_window
from flare_vlp.methods.creamfl.config import CLIENT_OPTIONS, REG_LRS, REGULARISERS, CreamFLConfig
from flare_vlp.methods.creamfl.models import (
    ROLE_MODALITIES,
    FindingsObjective,
    RoleModel,
    client_model_config,
    with_model,
)
from flare_vlp.methods.messages import Message, PayloadKind, Representations, Task, TaskMeta
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.public_set import PublicSet
from flare_vlp.methods.site_store import PersonalState, fingerprint
from flare_vlp.training import train_loop
from flare_vlp.training.loop import set_train_mode
from flare_vlp.training.objectives import ContrastiveObjective, Objective, batch_to_device
from flare_vlp.training.step import optimizer_step

__all__ = ["CreamFLClient"]

STORE_ENTRY = "model"
OPTIONS = CLIENT_OPTIONS
DEFAULTS = {key: getattr(CreamFLConfig(), key) for key in OPTIONS}
"""What a task that lacks an option means: the method's default setting."""


class CreamFLClient(ClientAlgo):
    """A CreamFL site of role ``image``, ``text`` or ``image_text``.

    Args:
        model: the client's ``model:`` section (default: the role's architecture,
            :data:`~flare_vlp.methods.creamfl.models.CLIENT_MODELS`); ``embed_dim`` defaults to the server's.
    """

    def __init__(self, model: Mapping | None = None):
        self._model_option = dict(model) if model is not None else None

    def initialize(self, site: SiteContext) -> None:
        if site.role not in ROLE_MODALITIES:
            raise ValueError(f"site {site.site!r}: unknown CreamFL role {site.role!r}; roles {sorted(ROLE_MODALITIES)}")
        self.site, self.modalities = site, ROLE_MODALITIES[site.role]
        model_cfg = client_model_config(site.cfg, site.role, self._model_option)
        self.cfg = with_model(site.cfg, model_cfg)
        self.public = PublicSet.load(site.cfg, data_dir=site.data_dir, manifest=site.manifest)
        self.data: SiteData = site.site_data(self.cfg, images="image" in self.modalities)
        self.model = RoleModel(self.data.model, site.role, len(self.public.findings))
        self.model.make_trainable(list(model_cfg.frozen))
        model_fingerprint = fingerprint({"role": site.role, "model": model_cfg.__dict__})
        self.personal = PersonalState(site.store, STORE_ENTRY, model_fingerprint)
        self.personal.restore(self.model, site.logger)

    def declaration(self) -> Declaration:
        return Declaration(
            receives=frozenset({PayloadKind.REPRESENTATIONS}),
            trains=(f"the private {self.site.role} model ({', '.join(self.modalities)})",),
            shares=frozenset({PayloadKind.REPRESENTATIONS, PayloadKind.METRICS}),
            shareable_keys=None,
            private_keys=frozenset(self.model.state_dict()),
            modalities=frozenset(self.modalities),
        )

    def objective(self) -> Objective:
        """The role's private task."""
        if self.model.head is None:
            return ContrastiveObjective(self.cfg.train.positives)
        return FindingsObjective(self.modalities[0])

    # -- tasks ------------------------------------------------------------------------------------------------

    def train(self, task: Task, message: Message, should_abort: ShouldAbort) -> Message | None:
        ids, banks = self._received(message)
        options = self._options(task)
        terms = REGULARISERS[options["regularisers"]]
        old = self._represent(ids) if "intra" in terms else {}
        steps = task.local_steps or self.site.local_steps or len(self.data.train_loader)
        result = train_loop(
            self.model, self.data.train_loader, self.cfg.train, objective=self.objective(), device=self.site.device,
            steps=steps, seed=self.cfg.seed + int(task.round), should_abort=should_abort,
            schedule_window=run_schedule_window(self.cfg.train, task, steps),
        )  # fmt: skip
        if result.aborted:
            return None
        batches = self._public_batches(ids, options["reg_steps"], self.cfg.seed + 1000 * int(task.round))
        # "schedule": the lr the private pass's run-wide schedule reached (its next step's), as one optimiser would
        reg_lr = float(result.last_logs["lr"]) if options["reg_lr"] == "schedule" else self.cfg.train.lr
        reg = self._regularise(batches, ids, banks, old, terms, float(options["reg_weight"]),
                               float(options["tau_r"]), reg_lr)  # fmt: skip
        arrays = self._represent(ids)
        self.model.cpu()
        self.personal.save(self.model.state_dict(), role=self.site.role)
        metrics = {"train_loss": result.final_loss, "lr": result.last_logs.get("lr", float("nan")), **reg,
                   "steps": result.steps, "rounds_done": self.personal.rounds_done}  # fmt: skip
        self.site.stream("round", metrics, int(task.round))
        return Message(
            representations=Representations(list(ids), {m: arrays[m] for m in self.modalities}),
            metrics=metrics,
            meta={TaskMeta.N_SAMPLES: self.data.n_train, TaskMeta.SITE: self.data.data_site},
        )

    def evaluate(self, task: Task, message: Message) -> Message:
        """The role's task loss of the site's own model on its val split (the message carries no weights)."""
        from flare_vlp.training.held_out import mean_loss

        if self.data.val_loader is None:
            return Message(metrics={"val_loss": float("nan")})
        loss = mean_loss(self.model, self.data.val_loader, self.objective(), self.site.device)
        return Message(metrics={"val_loss": loss, "n_val": self.data.n_val})

    # -- steps ------------------------------------------------------------------------------------------------

    def _received(self, message: Message) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The round's public ids and the global banks (both modalities, ``N x E``), checked."""
        reps = message.representations
        ids = list(reps.ids) if reps is not None else []
        self.public.check_ids(self.site.site, ids)
        dim = self.model.net.embed_dim
        banks = {}
        for modality in ("image", "text"):
            if modality not in reps.arrays:
                raise ValueError(f"site {self.site.site!r}: the task carries no global {modality} representations")
            bank = np.asarray(reps.arrays[modality])
            if bank.shape != (len(ids), dim):
                raise ValueError(
                    f"site {self.site.site!r}: global {modality} representations are {bank.shape}, expected "
                    f"{(len(ids), dim)} (public ids x this client's embed_dim)"
                )
            banks[modality] = torch.as_tensor(bank, dtype=torch.float32)
        return ids, banks

    def _options(self, task: Task) -> dict:
        unknown = sorted(set(task.options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"site {self.site.site!r}: task options {unknown} unknown to CreamFL ({OPTIONS})")
        options = {**DEFAULTS, **task.options}
        steps = options["reg_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"site {self.site.site!r}: reg_steps={steps!r}, expected an integer >= 0")
        if options["reg_lr"] not in REG_LRS:
            raise ValueError(f"site {self.site.site!r}: reg_lr={options['reg_lr']!r}, expected one of {list(REG_LRS)}")
        if options["regularisers"] not in REGULARISERS:
            raise ValueError(f"site {self.site.site!r}: regularisers={options['regularisers']!r}, expected one of "
                             f"{list(REGULARISERS)}")  # fmt: skip
        return options

    def _loader(self, ids: list[str], shuffle: bool = False, seed: int = 0):
        return self.public.loader(ids, self.data.tokenizer, self.cfg, shuffle=shuffle, seed=seed)

    def _public_batches(self, ids: list[str], steps: int, seed: int) -> Iterator[dict]:
        """The regulariser's batches: one pass over ``ids`` in order (``steps`` 0, the reference's one pass per
        round), else ``steps`` batches over as many passes as it takes, each reshuffled with seed ``seed + pass``."""
        if steps == 0 or not ids:
            return iter(self._loader(ids))
        passes = (self._loader(ids, shuffle=True, seed=seed + epoch) for epoch in itertools.count())
        return itertools.islice(itertools.chain.from_iterable(passes), steps)

    def _regularise(self, batches, ids, banks, old, terms, weight: float, tau_r: float, lr: float) -> dict[str, float]:
        """``weight * (inter + intra)`` per modality over the public ``batches`` (methods.md 3, step 2) at ``lr``;
        the mean terms, the steps taken and the lr."""
        if not terms or weight == 0:
            return {}
        model, device = self.model, self.site.device
        model.to(device)
        set_train_mode(model)  # the unused, frozen tower stays in eval mode
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        row = {sample: i for i, sample in enumerate(ids)}
        other = {"image": "text", "text": "image"}
        sums = {"inter": 0.0, "intra": 0.0}

        def forward(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
            rows = torch.tensor([row[str(i)] for i in batch["id"]])
            loss = torch.zeros((), device=device)
            for modality in self.modalities:
                z = model.embed(modality, batch)
                if "inter" in terms:
                    inter = inter_modal_contrast(z, banks[other[modality]].to(device), rows.to(device), tau_r)
                    loss, sums["inter"] = loss + inter, sums["inter"] + float(inter.detach())
                if "intra" in terms:
                    intra = intra_modal_contrast(
                        z, banks[modality][rows].to(device), torch.as_tensor(old[modality])[rows].to(device), tau_r
                    )
                    loss, sums["intra"] = loss + intra, sums["intra"] + float(intra.detach())
            return weight * loss, {}

        where = f"site {self.site.site!r} CreamFL regulariser: "
        steps = 0
        for batch in batches:
            batch = batch_to_device(batch, device)
            optimizer_step(functools.partial(forward, batch), params=params, optimizer=optimizer, cfg=self.cfg.train,
                           device=device, step=steps, where=where)  # fmt: skip
            steps += 1
        means = {f"reg_{k}": v / max(steps, 1) for k, v in sums.items() if k in terms}
        return {**means, "reg_steps": steps, "reg_lr": lr}

    def _represent(self, ids: list[str]) -> dict[str, np.ndarray]:
        """This client's l2-normalised representations of the public samples ``ids`` (row i = ids[i])."""
        return self.public.represent(self.model, ids, self.data.tokenizer, self.cfg, _embed, self.site.device)


def _embed(model: RoleModel, batch: dict) -> dict[str, torch.Tensor]:
    """A client's representations of ``batch`` in each modality of its role."""
    return {m: model.embed(m, batch) for m in model.modalities}
