"""Ports for the servers that tests and benchmarks start on 127.0.0.1: the local S3 server
(shards/local_s3.py), a Spark standalone cluster, a Spark Connect server, a torch rendezvous. Here,
beside local_s3, because both sides use it and this package imports neither Spark nor torch.

A port the system hands out (a bind to port 0) comes from its ephemeral range, which every other bind
to 0 and every outgoing connection also draw from. Between the moment a test picks one and the moment
its server binds it, another process can take it. On the 2-core VM this failed the two-node rendezvous
of tests/training/test_train.py (each launcher waited 60 s on a port something else held, while the
other pytest worker's Spark JVMs opened connections), and once the Spark Connect server's port. So the
ports come from outside the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), where only a
process that asks for that very port gets it, each checked free by binding it.
"""
from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000  # below this, well-known services' ports


def _outside_ephemeral() -> list[int]:
    low, high = map(int, _EPHEMERAL.read_text().split()) if _EPHEMERAL.exists() else (32768, 60999)
    return [*range(_LOWEST, low), *range(high + 1, 65536)]


def free_ports(count: int) -> list[int]:
    """``count`` different ports outside the ephemeral range, free now: each stays bound until the last
    is chosen. Drawn at random, so that two test processes rarely try the same one."""
    candidates = _outside_ephemeral()
    random.SystemRandom().shuffle(candidates)
    chosen: list[int] = []
    with contextlib.ExitStack() as held:
        for port in candidates:
            probe = held.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free ports on 127.0.0.1 outside the ephemeral range ({_EPHEMERAL})")
