"""``python -m modelport``: the same command line as the ``modelport`` script."""

from __future__ import annotations

import sys

from modelport.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
