"""MONAI-based data layer: the manifest format, SynthCXR, datasets, partitioning and real-data converters.

No FLARE imports here: the FLARE executors and the centralized baselines read data through the same code.
"""
