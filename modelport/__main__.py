"""``python -m modelport``: the same CLI as the ``modelport`` command (handy where only the interpreter is on PATH)."""

from __future__ import annotations

from modelport.cli import run

__all__: list[str] = []

if __name__ == "__main__":
    run()
