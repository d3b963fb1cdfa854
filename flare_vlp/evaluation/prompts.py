"""Text prompts for zero-shot classification: a positive and a negative prompt family per finding.

The score of finding f for an image is cos(z_img, mean positive prompt) - cos(z_img, mean negative prompt): the
positive-vs-negative contrast cancels the image's general similarity to "chest radiograph" text.
"""

from __future__ import annotations

__all__ = ["FINDING_PHRASES", "prompts_for"]

FINDING_PHRASES: dict[str, list[str]] = {
    "opacity": ["airspace opacity", "lung opacity", "consolidation"],
    "nodule": ["pulmonary nodule", "nodular opacity", "lung nodule"],
    "effusion": ["pleural effusion", "effusion", "pleural fluid"],
    "cardiomegaly": ["cardiomegaly", "enlarged heart", "enlarged cardiac silhouette"],
    "pneumothorax": ["pneumothorax", "collapsed lung", "pleural air"],
    "pleural_effusion": ["pleural effusion", "pleural fluid"],
    "lung_opacity": ["lung opacity", "airspace opacity"],
    "lung_lesion": ["lung lesion", "pulmonary mass"],
    "enlarged_cardiomediastinum": ["enlarged cardiomediastinum", "widened mediastinum"],
    "support_devices": ["support device", "line or tube"],
    "no_finding": ["normal chest", "no acute cardiopulmonary process"],
}

_POSITIVE = ["{p}.", "there is {p}.", "findings consistent with {p}."]
_NEGATIVE = ["no {p}.", "there is no {p}.", "no evidence of {p}."]


def prompts_for(finding: str) -> tuple[list[str], list[str]]:
    """(positive prompts, negative prompts) for a finding name of the manifest vocabulary."""
    phrases = FINDING_PHRASES.get(finding, [finding.replace("_", " ")])
    pos = [t.format(p=p) for p in phrases for t in _POSITIVE]
    neg = [t.format(p=p) for p in phrases for t in _NEGATIVE]
    return pos, neg
