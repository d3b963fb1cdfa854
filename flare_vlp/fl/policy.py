"""Site component policy: the class allow-list that lets a FLARE site build flare_vlp components.

FLARE 2.9 builds job components only from classes on a site's ``class_allow_list`` (``local/resources.json``; the
default list holds NVFLARE classes only) unless the job ships code in ``custom/`` (BYOC). flare_vlp jobs use the
installed package instead of shipping code, so every site that runs them must allow the ``flare_vlp.`` prefix:
:func:`allow_flare_vlp` does that for a simulator workspace or a POC/production site's startup folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

__all__ = ["PACKAGE_PREFIX", "add_flare_vlp", "allow_flare_vlp"]

PACKAGE_PREFIX = "flare_vlp."
ALLOW_LIST_KEY = "class_allow_list"


def allow_flare_vlp(local_dir: str | Path) -> Path:
    """Add ``flare_vlp.`` to the class allow-list in ``local_dir/resources.json`` (created from the default if absent).

    Args:
        local_dir: a site's ``local`` folder, e.g. ``<simulator workspace>/local`` or ``<startup kit>/local``.

    Returns:
        The path of the ``resources.json`` written.
    """
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    path = local_dir / "resources.json"
    return add_flare_vlp(path if path.is_file() else local_dir / "resources.json.default", path)


def add_flare_vlp(source: str | Path, target: str | Path | None = None) -> Path:
    """Write ``source`` (a site's resources JSON; ``{}`` if absent) with ``flare_vlp.`` allowed to ``target``.

    ``target`` defaults to ``source`` (edit in place, as the provisioning builder does with ``resources.json.default``).
    """
    source = Path(source)
    target = Path(target) if target is not None else source
    resources = json.loads(source.read_text()) if source.is_file() else {"format_version": 2}
    if not isinstance(resources, dict):
        raise ValueError(f"{source}: must hold a JSON object, got {type(resources).__name__}")
    allow = list(resources.get(ALLOW_LIST_KEY) or DEFAULT_CLASS_ALLOW_LIST)
    if not isinstance(allow, list):
        raise ValueError(f"{source}: '{ALLOW_LIST_KEY}' must be a list, got {type(allow).__name__}")
    if "*" not in allow and PACKAGE_PREFIX not in allow:
        allow.append(PACKAGE_PREFIX)
    resources[ALLOW_LIST_KEY] = allow
    target.write_text(json.dumps(resources, indent=4) + "\n")
    return target
