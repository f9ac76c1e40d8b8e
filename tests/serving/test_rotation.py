"""Token rotation: ``--api-key-file`` / ``--control-key-file`` are re-read when they change, the previous token
stays valid for ``--token-grace-s``, then only the new one is. Unit tests drive a fake clock; the load test
rotates a real server's key while HTTP and gRPC clients keep sending, and counts every failure."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from modelport.errors import InvalidArgumentError, UnauthenticatedError
from modelport.serving.auth import Tokens
from modelport.serving.settings import ServerSettings
from modelport.serving.tokens import KeyFile, digest
from tests.serving import fakes
from tests.serving.processes import serving, wait_until

OLD, NEW = "old-token-0123456789", "new-token-9876543210"
BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


def _rotate(path: Path, text: str) -> None:
    """Replace the file atomically, as a Kubernetes secret update or ``mv`` does."""
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text)
    os.replace(partial, path)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(OLD + "\n")
    return path


def test_a_rotated_file_is_read_at_once_and_the_previous_token_lasts_the_grace(key_file):
    clock = Clock()
    key = KeyFile(str(key_file), "api-key-file", grace_s=5, clock=clock)
    assert key.matches(digest(OLD)) and not key.matches(digest(NEW))
    _rotate(key_file, NEW)
    assert key.matches(digest(NEW)), "an unknown token makes the server look at the file before refusing"
    clock.now += 4.9
    assert key.matches(digest(OLD)), "the previous token within the grace period"
    clock.now += 0.1
    assert not key.matches(digest(OLD)) and key.matches(digest(NEW))
    assert not key.matches(digest("anything else"))


def test_a_good_token_does_not_stat_the_file_more_than_once_a_second(key_file):
    clock = Clock()
    key = KeyFile(str(key_file), "api-key-file", grace_s=0, clock=clock)
    _rotate(key_file, NEW)
    clock.now += 0.9
    assert key.matches(digest(OLD)), "no look at the file yet: the change is not known"
    clock.now += 0.1
    assert not key.matches(digest(OLD)), "a second later the change is seen, and with no grace the old one is out"
    assert key.matches(digest(NEW))


def test_an_emptied_or_missing_file_keeps_the_last_good_token(key_file, caplog):
    clock = Clock()
    key = KeyFile(str(key_file), "api-key-file", grace_s=0, clock=clock)
    caplog.set_level(logging.WARNING, logger="modelport.auth")
    _rotate(key_file, "\n")
    assert not key.matches(digest("")) and key.matches(digest(OLD))
    key_file.unlink()
    clock.now += 1
    assert key.matches(digest(OLD)) and key.matches(digest(OLD))
    clock.now += 1
    assert key.matches(digest(OLD))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, "one warning per change, not one per look"
    assert "empty; keeping the last good token" in warnings[0] and "No such file" in warnings[1], warnings
    _rotate(key_file, NEW)
    assert key.matches(digest(NEW)) and not key.matches(digest(OLD))


def test_the_grace_runs_from_the_files_change_not_from_the_first_request_after_it(key_file):
    """A port that had no request since the rotation (gRPC while the clients use HTTP, or a quiet night) looks at
    the file late: the revoked token must not get a fresh grace period from that first request."""
    clock, later = Clock(), Clock()
    later.now = 0.0
    key = KeyFile(str(key_file), "api-key-file", grace_s=5, clock=clock, wall=lambda: time.time() + later.now)
    _rotate(key_file, NEW)
    clock.now += 3
    later.now += 3
    assert key.matches(digest(OLD)), "3 s after the change, within the grace"
    assert key.matches(digest(NEW))
    clock.now += 2
    later.now += 2
    assert not key.matches(digest(OLD)), "5 s after the change the grace is over"

    quiet = KeyFile(str(key_file), "api-key-file", grace_s=5, clock=clock, wall=lambda: time.time() + later.now)
    _rotate(key_file, OLD + "-next")
    clock.now += 3600
    later.now += 3600
    assert not quiet.matches(digest(NEW)), "first request an hour after the change: the replaced token is refused"
    assert quiet.matches(digest(OLD + "-next"))


def test_a_change_time_from_a_clock_behind_ours_does_not_cut_the_grace_short(key_file):
    """A key file on a share whose server's clock is behind: its ctime looks old, but the server saw the file
    unchanged a second ago, so the change is younger than that."""
    clock = Clock()
    key = KeyFile(str(key_file), "api-key-file", grace_s=5, clock=clock, wall=lambda: time.time() + 1000)
    clock.now += 1
    _rotate(key_file, NEW)
    assert key.matches(digest(NEW))
    clock.now += 3.9
    assert key.matches(digest(OLD)), "within 5 s of the last look that saw the old file"
    clock.now += 0.1
    assert not key.matches(digest(OLD))


def test_a_file_may_hold_several_tokens_for_a_windowless_rotation(key_file):
    key = KeyFile(str(key_file), "api-key-file", grace_s=0, clock=Clock())
    _rotate(key_file, f"{OLD}\n{NEW}\n")
    assert key.matches(digest(NEW)) and key.matches(digest(OLD))


def test_a_key_file_must_hold_a_token_at_start(tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        KeyFile(str(tmp_path / "missing"), "api-key-file", grace_s=0)
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(InvalidArgumentError, match="is empty"):
        KeyFile(str(tmp_path / "empty"), "api-key-file", grace_s=0)


def test_tokens_check_follows_the_control_key_file(tmp_path, key_file):
    control = tmp_path / "control-key"
    control.write_text("control-1")
    settings = ServerSettings(repository=tmp_path, api_key_file=str(key_file), control_key_file=str(control))
    tokens = Tokens.from_settings(settings)
    tokens.check("control", "control-1")
    _rotate(control, "control-2")
    tokens.check("control", "control-2")
    with pytest.raises(UnauthenticatedError):
        tokens.check("control", OLD)


# --- a real server under load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """Clients that send continuously with whatever token ``token`` holds, recording (token, outcome)."""

    token: str = OLD
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, send: Callable[[str], str]) -> None:
        while not self.stop.is_set():
            token = self.token
            outcome = send(token)
            with self.lock:
                self.results.append((token, outcome))

    def served(self, token: str) -> int:
        with self.lock:
            return sum(1 for used, outcome in self.results if used == token and outcome == "ok")


def _http_sender(url: str) -> Callable[[str], str]:
    http = httpx.Client(base_url=url, timeout=10)

    def send(token: str) -> str:
        answer = http.post("/v2/models/echo/infer", json=BODY, headers={"Authorization": f"Bearer {token}"})
        return "ok" if answer.status_code == 200 else f"http {answer.status_code}"

    return send


def _grpc_sender(address: str) -> Callable[[str], str]:
    client = triton.InferenceServerClient(address)
    inputs = [triton.InferInput("x", [1, 3], "FP32").set_data_from_numpy(np.array([[1, 2, 3]], np.float32))]

    def send(token: str) -> str:
        try:
            client.infer("echo", inputs, headers={"authorization": f"Bearer {token}"})
        except triton.InferenceServerException as exc:
            return f"grpc {exc.status()}"
        return "ok"

    return send


@pytest.fixture
def rotating_server(tmp_path, key_file) -> Iterator[tuple[str, str]]:
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    flags = ("--api-key-file", str(key_file), "--token-grace-s", "3")
    with serving(repo, *flags, log=tmp_path / "server.log") as server:
        yield server.url, server.grpc


def test_rotation_under_load_fails_no_request(rotating_server, key_file):
    """The clients switch to the new token the moment the file is replaced: requests with the new token reach
    a server that has not looked at the file yet, requests with the old one are still in flight. None fails."""
    url, address = rotating_server
    load = Load()
    senders = {"http-1": _http_sender(url), "http-2": _http_sender(url), "grpc": _grpc_sender(address)}
    threads = [threading.Thread(target=load.run, args=(send,), name=name) for name, send in senders.items()]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: load.served(OLD) >= 150, timeout=60, what="150 requests with the old token")
        replaced = time.monotonic()
        _rotate(key_file, NEW)
        load.token = NEW
        wait_until(lambda: load.served(NEW) >= 250, timeout=60, what="250 requests with the new token")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(30)
    failures = [(token == NEW, outcome) for token, outcome in load.results if outcome != "ok"]
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed (new token?, outcome): {failures[:5]}"
    assert len(load.results) >= 400
    old_http, old_grpc = _http_sender(url), _grpc_sender(address)
    wait_until(lambda: old_http(OLD) == "http 401", timeout=30, what="HTTP refusing the old token")
    wait_until(lambda: old_grpc(OLD) == "grpc StatusCode.UNAUTHENTICATED", timeout=30, what="gRPC refusing it")
    assert time.monotonic() - replaced >= 3, "the old token was refused before the grace period was over"
    assert old_http(NEW) == "ok" and old_grpc(NEW) == "ok"
