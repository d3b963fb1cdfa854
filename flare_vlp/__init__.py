"""flare_vlp: federated medical vision-language pre-training and LoRA fine-tuning as NVIDIA FLARE plugins."""

__version__ = "0.1.0"
__all__ = ["__version__"]
