"""FedOPAL (personalized federated fine-tuning with orthogonal global + personal LoRA, docs/methods.md section 2)
and its baselines in one framework: local-only LoRA, FedAvg-LoRA, FFA-LoRA, FedSA-LoRA and full fine-tuning FedAvg.
One client algorithm, one strategy; the registered method's config variant decides adapters, sharing and freezing.
"""

from flare_vlp.methods.lora_ft.config import VARIANTS, LoraFTConfig, config_class
from flare_vlp.methods.registry import DEFAULT_ROLE, MethodSpec, register_method

__all__ = ["LoraFTConfig", "VARIANTS", "PERSONALIZED"]

PERSONALIZED = ("bacc_mean", "bacc_worst", "auc_mean", "auc_worst")
"""The headline of a personalized method (the report's columns): each site's own model on its own test split, mean
and worst site of balanced accuracy and macro AUC (:func:`~flare_vlp.methods.lora_ft.evaluate.personalized_summary`)."""

_SUMMARIES = {
    "fedopal": "FedOPAL: global LoRA averaged, personal LoRA + head local, orthogonality mu * R_orth",
    "local_lora": "local-only LoRA fine-tuning (nothing shared)",
    "fedavg_lora": "FedAvg-LoRA: one shared LoRA adapter averaged, head local",
    "ffa_lora": "FFA-LoRA: A frozen at a shared seed, only B trained and averaged",
    "fedsa_lora": "FedSA-LoRA: A shared and averaged, B kept local",
    "fedavg_full": "full fine-tuning FedAvg of the tower's trainable part and the head",
}

for _variant, _summary in _SUMMARIES.items():
    register_method(
        MethodSpec(
            _variant,
            config_class(_variant),
            "flare_vlp.methods.lora_ft.strategy.LoraFTStrategy",
            {DEFAULT_ROLE: "flare_vlp.methods.lora_ft.client.LoraFTClient"},
            _summary,
            job_name="fedopal_lora" if _variant == "fedopal" else f"{_variant}_ft",
            evaluator="flare_vlp.methods.lora_ft.evaluate.evaluate_personalized",
            report_columns=PERSONALIZED,
        )
    )
