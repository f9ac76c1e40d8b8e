"""Free TCP ports for servers that must be given their port before they start (TorchServe, ``--workers``).

A port the kernel picks for ``bind(port 0)`` comes from its ephemeral range (Linux: 32768-60999), the range it
also hands every other socket that binds port 0 or connects out. Between closing such a probe and the server's
own bind, another process can be given the same port: with servers starting side by side (tests under
pytest-xdist, tuner candidates), that race is real. The kernel never hands out a port below the ephemeral
range, so :func:`free_port` draws one there at random and checks that it binds; only another process choosing
the same way could take it, one in thousands. Where no such range exists, it falls back to the kernel's pick.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_LOWEST = 20000  # below this lie the well-known services' registered ports
_LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32768  # Linux's default, and below the IANA range (49152) other systems use
_TRIES = 64


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that binds now and that the kernel will not hand to a port-0 socket meanwhile."""
    high = _ephemeral_low()
    if high - _LOWEST >= 1000:
        draw = random.Random()
        for _ in range(_TRIES):
            port = draw.randrange(_LOWEST, high)
            if _binds(host, port):
                return port
    return _kernel_port(host)


def _ephemeral_low() -> int:
    try:
        return int(_LINUX_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _binds(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _kernel_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
