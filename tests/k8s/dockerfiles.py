"""Read Dockerfiles and .dockerignore well enough to check them against the code (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined; ``stage`` counts FROMs from 0."""

    keyword: str
    value: str
    stage: int
    line: int


def instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile (comments dropped, ``\\`` continuations joined)."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    stage = -1
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, value = " ".join(pending).partition(" ")
        pending = []
        if keyword.upper() == "FROM":
            stage += 1
        result.append(Instruction(keyword.upper(), value.strip(), stage, start))
    return result


def final_stage(items: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage: what the image is made of."""
    last = max(i.stage for i in items)
    return [i for i in items if i.stage == last]


def exec_form(value: str) -> list[str]:
    """A JSON-array (exec form) command; shell form is refused: signals must reach the server."""
    parsed = json.loads(value)
    if not (isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)):
        raise ValueError(f"not an exec-form command: {value}")
    return parsed


def pairs(value: str) -> dict[str, str]:
    """``KEY=VALUE ...`` of an ENV or ARG instruction (shell quoting, like Docker)."""
    result = {}
    for word in shlex.split(value):
        key, sep, item = word.partition("=")
        result[key] = item if sep else ""
    return result


def env(items: list[Instruction]) -> dict[str, str]:
    """The environment the final stage sets (later ENV wins)."""
    result: dict[str, str] = {}
    for item in final_stage(items):
        if item.keyword == "ENV":
            result.update(pairs(item.value))
    return result


def args(items: list[Instruction]) -> dict[str, str]:
    """Every ARG's default value."""
    result: dict[str, str] = {}
    for item in items:
        if item.keyword == "ARG":
            result.update(pairs(item.value))
    return result


def substitute(text: str, values: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` replaced by ARG defaults."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def healthcheck(items: list[Instruction]) -> list[str]:
    """The exec-form command of the final stage's HEALTHCHECK."""
    (check,) = [i for i in final_stage(items) if i.keyword == "HEALTHCHECK"]
    _, _, command = check.value.partition("CMD ")
    return exec_form(command)


def ignored(path: str, dockerignore: Path) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, POSIX) out of the build context.

    Docker's rules: patterns in order, the last match wins, ``!`` re-includes, and a path is
    excluded when it or one of its parent directories matches.
    """
    patterns = [line.strip() for line in dockerignore.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if any(_match(prefix, glob) for prefix in prefixes):
            excluded = not negated
    return excluded


def _match(path: str, glob: str) -> bool:
    if glob.startswith("**/"):
        tail = glob[3:]
        return any(fnmatch.fnmatchcase("/".join(path.split("/")[n:]), tail) for n in range(path.count("/") + 1))
    return fnmatch.fnmatchcase(path, glob) and path.count("/") == glob.count("/")
