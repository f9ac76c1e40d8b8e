"""``modelport tune``: search a family's variants and serving settings for the most throughput under an SLO.

The space (``space``), the searches (``search``), one candidate's measurement on a pinned server with
the package's own load generator (``measure``, ``loadgen``), and the report (``report``, ``html``, ``k8s``).
It sits above ``loadtest`` (its request encoding, SLOs and plots) and ``serving`` (``config.yaml``'s model).
"""

from __future__ import annotations

from modelport.tune.options import TuneOptions
from modelport.tune.result import TuneResult
from modelport.tune.run import run_tune

__all__ = ["TuneOptions", "TuneResult", "run_tune"]
