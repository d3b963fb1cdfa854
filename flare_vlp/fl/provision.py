"""Provisioning for flare_vlp: a project.yml builder that allows flare_vlp components in every startup kit, and the
loopback-only POC project this package provisions.

FLARE builds job components only from classes on each site's ``class_allow_list``; provisioning is the one moment
that writes every site's ``local/`` folder, so :class:`AllowFlareVLPBuilder` puts ``flare_vlp.`` there (in
``resources.json.default``, which POC's own later ``resources.json`` rewrite starts from). Add it to the
``builders`` of any project.yml (``nvflare provision -p project.yml``, ``nvflare poc prepare -i project.yml``).

The FLARE 2.9 server binds its listener to the host of its own service target, ``<server name>:<fed_learn_port>``
(``fed_server.json``), and only a loopback host binds loopback: POC's default server name ``server`` binds every
interface. :func:`write_poc_project` names the server ``localhost``, so server and admin listeners bind 127.0.0.1.
"""

from __future__ import annotations

import socket
from pathlib import Path

import yaml
from nvflare.lighter.spec import Builder

from flare_vlp.fl.policy import add_flare_vlp

__all__ = ["AllowFlareVLPBuilder", "BUILDER_PATH", "LOOPBACK_SERVER", "POC_ADMIN", "free_port", "write_poc_project"]

BUILDER_PATH = "flare_vlp.fl.provision.AllowFlareVLPBuilder"
LOOPBACK_SERVER = "localhost"
"""The POC server's name: FLARE binds a server whose service host is a loopback name to 127.0.0.1 only."""
POC_ADMIN = "admin@nvidia.com"
POC_PROJECT = "example_project"


class AllowFlareVLPBuilder(Builder):
    """Add ``flare_vlp.`` to the class allow-list of the server's and every client's ``local/resources.json.default``.

    List it after ``StaticFileBuilder`` (which writes that file) in the project.yml ``builders``.
    """

    def build(self, project, ctx) -> None:
        participants = [project.get_server(), *project.get_clients()]
        for participant in participants:
            if participant is None:
                continue
            source = Path(ctx.get_local_dir(participant)) / "resources.json.default"
            if not source.is_file():
                raise RuntimeError(
                    f"{BUILDER_PATH}: {source} of '{participant.name}' is missing; "
                    "list this builder after nvflare.lighter.impl.static_file.StaticFileBuilder"
                )
            add_flare_vlp(source)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it; another process could still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def write_poc_project(path: str | Path, clients: list[str], *, port: int | None = None) -> Path:
    """Write a POC project.yml: server ``localhost`` on ``port`` (a free one by default) for both the FL and the
    admin service, the POC admins, ``clients``, and the FLARE builders plus :class:`AllowFlareVLPBuilder`.

    Returns:
        ``path``.
    """
    if not clients:
        raise ValueError(f"{path}: a POC project needs at least one client")
    port = port or free_port()
    server = {"name": LOOPBACK_SERVER, "type": "server", "org": "nvidia", "fed_learn_port": port, "admin_port": port}
    admins = [
        {"name": POC_ADMIN, "type": "admin", "org": "nvidia", "role": "project_admin"},
        {"name": "org-admin@nvidia.com", "type": "admin", "org": "nvidia", "role": "org_admin"},
        {"name": "lead@nvidia.com", "type": "admin", "org": "nvidia", "role": "lead"},
    ]
    project = {
        "api_version": 3,
        "name": POC_PROJECT,
        "description": "flare_vlp POC: loopback-only server, flare_vlp components allowed at every site",
        "participants": [server, *admins, *({"name": c, "type": "client", "org": "nvidia"} for c in clients)],
        "builders": [
            {
                "path": "nvflare.lighter.impl.workspace.WorkspaceBuilder",
                "args": {"template_file": ["master_template.yml", "aws_template.yml", "azure_template.yml"]},
            },
            {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder", "args": {"config_folder": "config"}},
            {"path": "nvflare.lighter.impl.cert.CertBuilder"},
            {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
            {"path": BUILDER_PATH},
        ],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path
