"""The one client algorithm of FedOPAL and its baselines: multi-label finding classification (BCE) with a frozen
image tower, LoRA adapters and a linear head; the variant (task option ``variant``) decides which adapters exist,
which tensors travel and which stay in the site store.

Per round: load the received shared tensors, train ``local_steps`` steps of BCE (+ ``orth_mu * R_orth`` between
the global and personal adapters for FedOPAL; each step through :func:`~flare_vlp.training.step.optimizer_step`, so
under ``train.amp`` and clipped to ``train.grad_clip``), save the site-local tensors (personal adapter, local factors,
head) as the site's :class:`~flare_vlp.methods.site_store.PersonalState`, and reply with the shared tensors only.
In the last round the site also evaluates its personalized model on its own test split, thresholds chosen on its
val split, and reports only metrics (``test_bacc``, ``test_auc``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from flare_vlp.algorithms.orthogonality import (
    orthogonality_representations,
    orthogonality_subspace,
    orthogonality_weights,
)
from flare_vlp.data.keys import SampleKey
from flare_vlp.data.manifest import Manifest
from flare_vlp.experiments.builders import build_dataset, build_loader
from flare_vlp.experiments.site_data import SiteData
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext
from flare_vlp.methods.lora_ft.config import VARIANTS
from flare_vlp.methods.lora_ft.metrics import classification_metrics
from flare_vlp.methods.lora_ft.model import (
    build_classifier,
    fingerprint,
    load_shared_state,
    shared_keys,
    shared_state,
)
from flare_vlp.methods.messages import Message, PayloadKind, Task, TaskMeta
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.site_store import PersonalState
from flare_vlp.models.lora import lora_factor_pairs
from flare_vlp.training.step import optimizer_step

__all__ = ["LoraFTClient", "STORE_ENTRY"]

STORE_ENTRY = "personal"


class LoraFTClient(ClientAlgo):
    """A site of FedOPAL / local-only LoRA / FedAvg-LoRA / FFA-LoRA / FedSA-LoRA / full fine-tuning FedAvg.

    Args:
        variant: the method variant (default: the one the server's task options name; given here, the site
            refuses tasks of another variant).
    """

    def __init__(self, variant: str | None = None):
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; variants: {sorted(VARIANTS)}")
        self._variant = variant
        self.model = None

    def initialize(self, site: SiteContext) -> None:
        self.site, self.cfg = site, site.cfg
        self.data: SiteData = site.site_data()
        rows = site.rows()
        self.findings = list(rows.findings)
        test = Manifest([r for r in rows if r.site == self.data.data_site and r.split == "test"], rows.findings)
        self.test_loader = None
        if len(test) >= 2:
            args = {"batch_size": site.cfg.eval.batch_size, "max_length": site.cfg.data.max_text_length}
            self.test_loader = build_loader(
                build_dataset(test, site.cfg.data, train=False), self.data.tokenizer, shuffle=False, **args
            )
        self.personal: PersonalState | None = None  # built with the model, on the first task
        self.steps_done = 0
        self.orth_active_step: int | None = None  # first step at which R_orth had a non-zero gradient

    # -- the model, built on the first task (its variant comes with the task options) ---------------------------

    def _build(self, options: dict) -> None:
        if self._variant is not None and options.get("variant") != self._variant:
            raise ValueError(
                f"site {self.site.site!r}: task of variant {options.get('variant')!r}, this site runs {self._variant!r}"
            )
        self.options = dict(options)
        self.model, self.adapted = build_classifier(self.data.model, len(self.findings), self.options, self.cfg.seed)
        self.variant = VARIANTS[self.options["variant"]]
        self._shared = set(shared_keys(self.model, self.options))
        model_fingerprint = fingerprint(self.cfg.model, self.options, len(self.findings))
        self.personal = PersonalState(self.site.store, STORE_ENTRY, model_fingerprint)
        meta = self.personal.restore(self.model, self.site.logger, strict=False, what="personal state")
        if meta is not None:
            self.steps_done = int(meta.get("steps_done", 0))
            active = meta.get("orth_active_step")
            self.orth_active_step = None if active is None else int(active)

    def _local_keys(self) -> list[str]:
        """Site-local state: trainable tensors that are not shared, and the tower's normalisation statistics."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        buffers = {n for n, _ in self.model.named_buffers() if "running_" in n or "num_batches" in n}
        return sorted((trainable | buffers) - self._shared)

    def declaration(self) -> Declaration:
        kind = PayloadKind.WEIGHTS if self.model is not None and "full" in self.variant["shared"] else None
        kind = kind or PayloadKind.ADAPTERS
        private = frozenset(self._local_keys()) if self.model is not None else frozenset()
        return Declaration(
            receives=frozenset({PayloadKind.ADAPTERS, PayloadKind.WEIGHTS}),
            trains=("LoRA adapters and the classification head",),
            shares=frozenset({kind, PayloadKind.METRICS}),
            shareable_keys=frozenset(self._shared) if self.model is not None else frozenset(),
            private_keys=private,
        )

    # -- training -----------------------------------------------------------------------------------------------

    def _orth_loss(self, branch_out: dict[str, list[torch.Tensor]]) -> torch.Tensor | None:
        if self.options["variant"] != "fedopal" or self.options["orth_mu"] == 0:
            return None
        kind = self.options["orthogonality"]
        if kind == "representations":
            pairs = zip(branch_out["global"], branch_out["personal"], strict=True)
            return sum(orthogonality_representations(_rows(g), _rows(p)) for g, p in pairs)
        layers = [
            (a_g, b_g, a_p, b_p)
            for (a_g, b_g), (a_p, b_p) in zip(
                lora_factor_pairs(self.model.encoder, "global"),
                lora_factor_pairs(self.model.encoder, "personal"),
                strict=True,
            )
        ]
        return orthogonality_weights(layers) if kind == "weights" else orthogonality_subspace(layers)

    def _hooks(self) -> tuple[dict[str, list[torch.Tensor]], list]:
        """Forward hooks collecting each branch's output (``B_x A_x h`` per adapted layer) for R_orth (iii)."""
        out: dict[str, list[torch.Tensor]] = {"global": [], "personal": []}
        handles = []
        if self.options["variant"] == "fedopal" and self.options["orthogonality"] == "representations":
            from peft.tuners.lora import LoraLayer

            for m in self.model.encoder.modules():
                if isinstance(m, LoraLayer):
                    for name in out:
                        handles.append(m.lora_B[name].register_forward_hook(lambda _m, _i, o, n=name: out[n].append(o)))
        return out, handles

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, params: list, branch_out: dict, mu: float):
        """One batch's ``BCE (+ mu * R_orth)`` and its logs; records the first step at which R_orth has a gradient."""
        for v in branch_out.values():
            v.clear()
        loss = F.binary_cross_entropy_with_logits(self.model(images), labels)
        logs = {"bce": float(loss.detach())}
        orth = self._orth_loss(branch_out)
        if orth is None:
            return loss, logs
        logs["orth"] = float(orth.detach())
        if self.orth_active_step is None:
            grads = torch.autograd.grad(orth, params, retain_graph=True, allow_unused=True)
            if any(g is not None and g.abs().sum() > 0 for g in grads):
                self.orth_active_step = self.steps_done
        return loss + mu * orth, logs

    def _train_steps(self, steps: int, should_abort: ShouldAbort) -> dict[str, float] | None:
        device = self.site.device
        model = self.model.to(device).train()
        self.data.model.text_encoder.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(self.options["lr"]), weight_decay=0.0)
        mu = float(self.options["orth_mu"])
        branch_out, handles = self._hooks()
        torch.manual_seed(self.cfg.seed + 1000 * self.personal.rounds_done)
        where = f"site {self.site.site!r} ({self.options['variant']}): "
        losses, orth_values, done = [], [], 0
        try:
            while done < steps:
                for batch in self.data.train_loader:
                    if should_abort():
                        return None
                    images = batch[SampleKey.IMAGE].to(device)
                    labels = batch[SampleKey.LABELS].to(device)
                    forward = functools.partial(self._loss, images, labels, params, branch_out, mu)
                    _, logs = optimizer_step(forward, params=params, optimizer=optimizer, cfg=self.cfg.train,
                                             device=device, step=self.steps_done, where=where)  # fmt: skip
                    losses.append(logs["bce"])
                    if "orth" in logs:
                        orth_values.append(logs["orth"])
                    done += 1
                    self.steps_done += 1
                    if done >= steps:
                        break
        finally:
            for h in handles:
                h.remove()
        metrics = {"train_loss": float(np.mean(losses[-5:])), "steps": done}
        if orth_values:
            metrics["orth_loss"] = orth_values[-1]
        return metrics

    def train(self, task: Task, message: Message, should_abort: ShouldAbort) -> Message | None:
        if self.model is None:
            self._build(dict(task.options))
        received = message.weights or message.adapters
        if received:
            load_shared_state(
                self.model, self.options, {k: torch.as_tensor(np.asarray(v)) for k, v in received.items()}
            )
        steps = task.local_steps or self.site.local_steps or len(self.data.train_loader)
        metrics = self._train_steps(steps, should_abort)
        if metrics is None:
            return None
        self.model.cpu()
        state = self.model.state_dict()
        meta = {"steps_done": self.steps_done}
        if self.orth_active_step is not None:
            meta["orth_active_step"] = self.orth_active_step
        self.personal.save({k: state[k] for k in self._local_keys()}, **meta)
        metrics["rounds_done"] = self.personal.rounds_done
        if self.options["variant"] == "fedopal":  # the first step at which R_orth had a gradient (-1: not yet)
            metrics["orth_active_step"] = -1 if self.orth_active_step is None else self.orth_active_step
        last = task.total_rounds is not None and task.round + 1 >= task.total_rounds
        if last:
            metrics.update(self.personalized_metrics())
        self.site.stream("round", metrics, int(task.round))
        shared = {k: v.numpy() for k, v in shared_state(self.model, self.options).items()}
        kind = "weights" if "full" in self.variant["shared"] else "adapters"
        return Message(
            **{kind: shared},
            metrics=metrics,
            meta={TaskMeta.N_SAMPLES: self.data.n_train, TaskMeta.SITE: self.data.data_site},
        )

    # -- evaluation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _scores(self, loader) -> tuple[np.ndarray, np.ndarray]:
        model = self.model.to(self.site.device).eval()
        scores, labels = [], []
        for batch in loader:
            scores.append(torch.sigmoid(model(batch[SampleKey.IMAGE].to(self.site.device))).float().cpu())
            labels.append(batch[SampleKey.LABELS].float())
        self.model.cpu()
        return torch.cat(labels).numpy(), torch.cat(scores).numpy()

    def personalized_metrics(self) -> dict[str, float]:
        """The site's own model on its own test split: balanced accuracy (per-finding thresholds chosen on the val
        split) and macro AUC."""
        if self.test_loader is None:
            return {}
        val = self._scores(self.data.val_loader) if self.data.val_loader is not None else None
        test = self._scores(self.test_loader)
        return classification_metrics(test, val)

    def evaluate(self, task: Task, message: Message) -> Message:
        """The site's personalized model on its own test split (the received message is not used: personalized)."""
        if self.model is None:
            self._build(dict(task.options))
        return Message(metrics=self.personalized_metrics())


def _rows(h: torch.Tensor) -> torch.Tensor:
    """Branch outputs as rows x features (a conv's ``B x C x H x W``: one row per position)."""
    return h.movedim(1, -1).reshape(-1, h.shape[1]) if h.dim() == 4 else h.reshape(-1, h.shape[-1])
