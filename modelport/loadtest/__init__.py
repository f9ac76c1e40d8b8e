"""Load testing with locust: generated users, sweeps, SLO gates, server metrics, reports, the format shoot-out.

locust runs in its own process (it monkey-patches the standard library with gevent); this package
talks to servers only over the network.
"""

from __future__ import annotations

from modelport.loadtest.compare import CompareResult, run_compare
from modelport.loadtest.options import CompareOptions, Level, LoadTestOptions
from modelport.loadtest.report import LoadTestReport
from modelport.loadtest.runner import run_loadtest
from modelport.loadtest.slo import Slo, parse_slo

__all__ = [
    "CompareOptions",
    "CompareResult",
    "Level",
    "LoadTestOptions",
    "LoadTestReport",
    "Slo",
    "parse_slo",
    "run_compare",
    "run_loadtest",
]
