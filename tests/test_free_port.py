"""``modelport.ports.free_port``: a port below the kernel's ephemeral range, free when chosen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelport import ports


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_lie_below_the_ephemeral_range_and_bind():
    low = _ephemeral_low()
    chosen = {ports.free_port() for _ in range(20)}
    assert all(20000 <= port < low for port in chosen), chosen
    assert len(chosen) > 10, "drawn at random, not one port again and again"
    for port in list(chosen)[:3]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_chosen(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 20000 + 1000)
        monkeypatch.setattr(ports, "_LOWEST", 20000)
        draws = iter([taken, taken, 20500])
        monkeypatch.setattr(ports.random.Random, "randrange", lambda self, a, b: next(draws))
        assert ports.free_port() == 20500


def test_without_a_usable_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch):
    read_range = ports._ephemeral_low
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 20100)  # too narrow a range below it
    assert ports.free_port() >= _ephemeral_low(), "the kernel's pick, from its ephemeral range"
    monkeypatch.setattr(ports, "_LINUX_RANGE", Path("/nonexistent/ip_local_port_range"))
    assert read_range() == 32768
