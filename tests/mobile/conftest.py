"""Edge bundles of both digits models, built once per session from the exported repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from modelport.mobile import BundleOptions, BundleReport, build_bundle


@dataclass(frozen=True)
class Bundles:
    """The Keras bundle (every TFLite variant + ORT) and the PyTorch one (float32 via litert-torch)."""

    keras: Path
    keras_report: BundleReport
    torch: Path
    torch_report: BundleReport


@pytest.fixture(scope="session")
def bundles(digits_repo, digits, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    out = tmp_path_factory.mktemp("bundles")
    keras = build_bundle(
        BundleOptions(
            digits_repo.root / "kdigits",
            out / "kdigits",
            ort=True,
            eval_data=digits.eval_nhwc,
            mean=(0.0,),
            std=(16.0,),
            latency_runs=20,
            quiet=True,
        )
    )
    torch = build_bundle(
        BundleOptions(
            digits_repo.root / "digits", out / "digits", eval_data=digits.eval_nchw, latency_runs=20, quiet=True
        )
    )
    return Bundles(out / "kdigits", keras, out / "digits", torch)
