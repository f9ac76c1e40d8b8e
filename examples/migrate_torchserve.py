"""Migrate a TorchServe archive with a custom handler to modelport, and call it as TorchServe's clients do.

    python examples/migrate_torchserve.py WORKDIR

Builds WORKDIR/colors.mar with ``torch-model-archiver`` (the ``torchserve`` extra): a TorchScript
model (``logits = 4 * [mean R, mean G, mean B]``), the custom handler ``examples/mar/color_handler.py``
(a ``BaseHandler`` subclass that decodes images with Pillow) and ``index_to_name.json``. Then
``modelport import-mar colors.mar --repository WORKDIR/repo --sample red.jpg`` (no ``--input``: the
handler decides what the model sees; the sample and the handler's answer to it become the golden
check the server runs at load), starts ``modelport serve`` and sends a JPEG as ``curl -T`` does and
two as ``curl -F`` does. Each answer is checked against the same computation in numpy: it exits 1
if one is wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.helpers import check, curl, softmax_top, write_image
from examples.mar.color_handler import SIZE
from modelport.cli import main as modelport
from modelport.launcher import LaunchOptions, launched

HANDLER = Path(__file__).resolve().parent / "mar" / "color_handler.py"
LABELS = ["red", "green", "blue"]


def write_archive(work: Path) -> Path:
    """WORKDIR/colors.mar: model.pt (TorchScript), the handler file and index_to_name.json."""
    import torch

    model = torch.nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(4 * torch.eye(3))
        model.bias.zero_()
    torch.jit.trace(model.eval(), torch.zeros(1, 3)).save(str(work / "model.pt"))
    (work / "index_to_name.json").write_text(json.dumps(dict(enumerate(LABELS))))
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [str(archiver), "--model-name", "colors", "--version", "1.0", "--serialized-file", str(work / "model.pt"),
               "--handler", str(HANDLER), "--extra-files", str(work / "index_to_name.json"),
               "--export-path", str(work), "--force"]  # fmt: skip
    subprocess.run(command, check=True)
    return work / "colors.mar"


def expected(image: Path) -> dict[str, float]:
    """What the handler answers for ``image``, computed here with Pillow and numpy."""
    pixels = np.asarray(Image.open(image).convert("RGB").resize(SIZE), dtype=np.float32) / 255
    answer = softmax_top(4 * pixels.reshape(-1, 3).mean(axis=0), LABELS, k=2)
    return {label: round(p, 4) for label, p in answer.items()}


def main(work: Path) -> int:
    mar = write_archive(work)
    red, blue = write_image(work / "red.jpg", (230, 20, 10)), write_image(work / "blue.jpg", (20, 40, 220))
    command = ["import-mar", str(mar), "--repository", str(work / "repo"), "--sample", str(red), "--quiet"]
    print("modelport", " ".join(command))
    if modelport(command) != 0:
        return 1
    with launched(work / "repo", "--log-level", "warning", options=LaunchOptions(timeout_s=120)) as server:
        url = f"{server.url}/predictions/colors"
        ok = check("curl -T", json.loads(curl("-T", str(red), url)), expected(red))
        both = json.loads(curl("-F", f"data=@{red}", "-F", f"data=@{blue}", url))
        ok &= check("curl -F", both, [expected(red), expected(blue)])
    return server.process.returncode or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
