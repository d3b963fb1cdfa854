"""Experiment plumbing shared by the baselines (here) and the FLARE components (``flare_vlp.fl``).

``builders`` turns an :class:`~flare_vlp.config.ExperimentConfig` into data, datasets, loaders and a model;
``run_folder`` writes the one run-folder layout every method uses; ``baselines`` runs centralized and local-only
training; ``report`` compares run folders.
"""
