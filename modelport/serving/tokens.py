"""Where a token comes from: a fixed value, or a key file that is re-read when it changes (rotation).

Tokens are kept as SHA-256 digests and compared with ``hmac.compare_digest``. A key file holds one
token per non-empty line (a mounted Kubernetes secret usually holds one, with a trailing newline), so
a fleet can rotate without a window: add the new token as a second line, move the clients, remove
the old line. A plain swap (the file's only token replaced) is covered by ``grace_s``: after the
file changed (its inode's change time: a ``mv`` or a Kubernetes secret update sets it), the tokens the
server held before are still accepted that long, then refused, however late the server looks at the file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelport.errors import InvalidArgumentError

__all__ = ["CHECK_INTERVAL_S", "FixedKey", "Key", "KeyFile", "digest"]

log = logging.getLogger("modelport.auth")

CHECK_INTERVAL_S = 1.0


def digest(token: str) -> bytes:
    """The SHA-256 digest a token is stored and compared as."""
    return hashlib.sha256(token.encode()).digest()


def _accepted(presented: bytes, digests: tuple[bytes, ...]) -> bool:
    """Compare against every digest (no early exit): the time taken does not say which one matched."""
    found = False
    for expected in digests:
        found |= hmac.compare_digest(presented, expected)
    return found


class Key(Protocol):
    """The token (or tokens) one scope accepts."""

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` (a digest) is an accepted token now."""
        ...


@dataclass(frozen=True)
class FixedKey:
    """A token given as a value (``--api-key``): it never changes."""

    expected: bytes

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` is this token's digest."""
        return hmac.compare_digest(presented, self.expected)


@dataclass(frozen=True)
class _State:
    """One immutable snapshot, swapped whole: a reader never sees half a rotation."""

    current: tuple[bytes, ...]
    previous: tuple[bytes, ...] = ()
    previous_until: float = 0.0
    seen: object = None  # the file's (device, inode, size, mtime) or the error last met, to act once per change


def _signature(info: os.stat_result) -> object:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read_tokens(path: Path) -> tuple[bytes, ...]:
    return tuple(digest(line.strip()) for line in path.read_text().splitlines() if line.strip())


class KeyFile:
    """Tokens read from a file and re-read when it changes, so they rotate without a restart.

    The file is looked at (one ``stat``) at most every ``interval_s`` by a request that presents an
    accepted token, and by every request whose token is unknown (it may be the new one): a request
    with a good token never pays more than a clock read in between. A changed file is read again;
    its tokens replace the current ones, which stay accepted until ``grace_s`` after the file changed
    (``wall``: the clock its change time is read against), not after a request first saw the change: a
    revoked token is refused once the grace is over even on a port that had no request since. An emptied,
    missing or unreadable file during rotation keeps the last good tokens and logs one warning per change.
    At start the file must be readable and hold a token (else :class:`InvalidArgumentError`).
    """

    def __init__(
        self,
        path: str,
        flag: str,
        grace_s: float,
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.flag, self.grace_s, self.interval_s, self._clock = Path(path), flag, grace_s, interval_s, clock
        self._wall = wall
        try:
            seen, tokens = _signature(os.stat(self.path)), _read_tokens(self.path)
        except OSError as exc:
            raise InvalidArgumentError(f"--{flag} {path}: cannot read: {exc.strerror}") from None
        if not tokens:
            raise InvalidArgumentError(f"--{flag} {path} is empty")
        self._state = _State(current=tokens, seen=seen)
        self._looked = clock()  # the last look at the file (the change it finds happened after that)
        self._next_check = self._looked + interval_s

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` is a current token, or a previous one within the grace period."""
        now = self._clock()
        if now >= self._next_check:
            self.refresh()
        if self._accepts(presented, now):
            return True
        return self.refresh() and self._accepts(presented, now)

    def _accepts(self, presented: bytes, now: float) -> bool:
        state = self._state
        previous = state.previous if now < state.previous_until else ()
        return _accepted(presented, state.current + previous)

    def refresh(self) -> bool:
        """Look at the file now; re-read it if it changed. True when the accepted tokens changed."""
        now = self._clock()
        self._next_check = now + self.interval_s
        looked, self._looked = self._looked, now
        state = self._state
        try:
            info = os.stat(self.path)  # follows symlinks: a Kubernetes secret update swaps the ..data link
            seen: object = _signature(info)
            if seen == state.seen:
                return False
            tokens = _read_tokens(self.path)
        except OSError as exc:
            seen, tokens = f"{exc.strerror}", ()
            if seen == state.seen:
                return False
        if not tokens:
            log.warning(
                "--%s %s: %s; keeping the last good token",
                self.flag,
                self.path,
                seen if isinstance(seen, str) else "empty",
            )
            self._state = _State(state.current, state.previous, state.previous_until, seen)
            return False
        if set(tokens) == set(state.current):
            self._state = _State(state.current, state.previous, state.previous_until, seen)
            return False
        # the change, on the monotonic clock: its ctime, but not before the last look that saw the file unchanged
        # (a file server's clock behind ours must not cut the grace short)
        changed_at = max(looked, now - max(0.0, self._wall() - info.st_ctime))
        self._state = _State(tokens, state.current, changed_at + self.grace_s, seen)
        log.info(
            "--%s %s changed: new token(s) in use, the previous ones accepted %gs longer",
            self.flag,
            self.path,
            round(max(0.0, changed_at + self.grace_s - now), 1),
        )
        return True
