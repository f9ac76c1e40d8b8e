"""Tune fixtures: a toy family of fake-runtime variants (no ML framework) with export accuracy records."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelport.manifest import Quantization, read_manifest, write_manifest
from tests.serving import fakes


def toy_family(repo: Path, accuracies: dict[str, float], runtimes: dict[str, str] | None = None) -> Path:
    """One fake model per variant of the family 'toy' (``toy-<variant>``), each with its recorded accuracy.

    Variants named ``*-int8`` are quantized with a top-1 agreement of 1 - (the fp32 accuracy - theirs).
    """
    reference = accuracies.get("onnx", 1.0)
    for variant, accuracy in accuracies.items():
        directory = fakes.write_model(repo, f"toy-{variant}")
        if runtimes and variant in runtimes:
            (directory.parent / "config.yaml").write_text(yaml.safe_dump({"runtime": runtimes[variant]}))
        manifest = read_manifest(directory)
        assert manifest.parity is not None
        quantized = variant.endswith("int8")
        outputs = tuple(
            o.model_copy(update={"top1_agreement": 1 - (reference - accuracy)}) if quantized else o
            for o in manifest.parity.outputs
        )
        parity = manifest.parity.model_copy(
            update={"accuracy": accuracy, "outputs": outputs, "gate": "agreement" if quantized else "tolerance"}
        )
        update = {"family": "toy", "variant": variant, "parity": parity}
        if quantized:
            update["quantization"] = Quantization(method="dynamic-int8")
        write_manifest(manifest.model_copy(update=update), directory)
        (directory / "model.onnx").write_bytes(bytes(3000))
    return repo
