"""Settings of the session's shared deployment (tests/fl/conftest.py ``deployment``) and which TCP addresses a set of
processes listens on (from /proc), for the loopback-only checks of the deployments."""

from __future__ import annotations

import os
from pathlib import Path

DEPLOY_SITES = ["site-1", "site-2"]
DEPLOY_CREDENTIAL = "admin@flare-vlp.org:walk-pass-123:flarevlp"
"""The dashboard's project admin (``email:password:org``) of the shared deployment."""
HELPERS = str(Path(__file__).parent)
"""This folder: the corrupting executor a drill runs at site-2 is imported from it."""
SERVER_ENV = {"NVFLARE_DEAD_CLIENT_GRACE_PERIOD": "5", "NVFLARE_CLIENT_OUTCOME_WAIT_TIMEOUT": "10"}
"""FLARE's waits for a silent site, shortened for the drills: a site reported dead ends its tasks after 5 s (default
60 s), and a finished job waits 10 s (default 900 s) for the outcome of a site that will never report; see
docs/deployment.md."""

_MAPPED = "0000000000000000FFFF0000"
"""The /proc/net/tcp6 prefix of an IPv4-mapped IPv6 address."""


def listening(pids: list[int]) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state held by ``pids`` (from /proc/net/tcp, tcp6); an IPv6 address
    is shown as /proc spells it (``::1`` for loopback), an IPv4-mapped one as IPv4."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                if len(host) == 8:
                    ip = _ipv4(host)
                elif host.startswith(_MAPPED):
                    ip = _ipv4(host[len(_MAPPED) :])
                else:
                    ip = "::1" if host == "00000000000000000000000001000000" else host
                found.append(f"{ip}:{int(port, 16)}")
    return found


def _ipv4(packed: str) -> str:
    return ".".join(str(int(packed[i : i + 2], 16)) for i in (6, 4, 2, 0))


def all_loopback(addresses: list[str]) -> bool:
    """True when there is at least one address and every one is on loopback."""
    return bool(addresses) and all(a.startswith("127.") or a.startswith("::1:") for a in addresses)
