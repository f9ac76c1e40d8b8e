"""Edge bundles of both digits models, built once per session from the exported repository: without
processing (as bundles were before it existed) and with the digits' image processing and raw samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from modelport.mobile import BundleOptions, BundleReport, build_bundle

PROCESSORS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "processors.yaml"


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


@dataclass(frozen=True)
class ImageBundles:
    """Both digits models bundled with examples/digits/processors.yaml and held-out digits as PNG samples."""

    torch: Path
    keras: Path
    reports: dict[str, BundleReport]
    samples: list[Path]  # six 8x8 digits, then two upscaled to 32x32 (the box filter shrinks them back)


@pytest.fixture(scope="session")
def image_bundles(digits_repo, digits, tmp_path_factory: pytest.TempPathFactory) -> ImageBundles:
    import numpy as np

    from examples.digits.data import save_images

    out = tmp_path_factory.mktemp("image-bundles")
    held_out = np.load(digits.eval_nchw)
    images, labels = held_out["image"][:8, 0], held_out["labels"][:8]
    samples = save_images(out / "png", images[:6], labels[:6]) + save_images(
        out / "png32", images[6:], labels[6:], upscale=4
    )
    reports = {}
    for name, eval_data in (("digits", digits.eval_nchw), ("kdigits", digits.eval_nhwc)):
        reports[name] = build_bundle(
            BundleOptions(
                digits_repo.root / name,
                out / name,
                eval_data=eval_data,
                processors=PROCESSORS,
                samples=tuple(samples),
                latency_runs=20,
                quiet=True,
            )
        )
    return ImageBundles(out / "digits", out / "kdigits", reports, samples)


@dataclass(frozen=True)
class TextBundle:
    """The tiny text classifier bundled with its tokenizer, index_to_name.json and every sentence as a .txt sample."""

    path: Path
    report: BundleReport
    samples: list[Path]


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> TextBundle:
    from tests.mobile.text_model import NAMES, SENTENCES, processors_file, text_repo

    root = tmp_path_factory.mktemp("text")
    text_repo(root / "repo", NAMES, "index_to_name.json")
    samples = []
    for index, text in enumerate(SENTENCES):
        samples.append(root / f"sentence-{index}.txt")
        samples[-1].write_text(text, encoding="utf-8")
    options = BundleOptions(
        root / "repo" / "text",
        root / "bundle",
        processors=processors_file(root / "processors.yaml", None),
        samples=tuple(samples),
        latency_runs=5,
        quiet=True,
    )
    return TextBundle(root / "bundle", build_bundle(options), samples)
