"""``python -m modelport``: the ``modelport`` command."""

from __future__ import annotations

from modelport.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
