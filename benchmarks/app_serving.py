"""Application-serving benchmark: JPEG bytes -> top-5 labels, modelport against a real TorchServe 0.12.

    python benchmarks/app_serving.py [--concurrency 1,8,32] [--duration 10] [--rounds 3] [--quick]
                                     [--images 4] [--out benchmarks/results/app_serving.json]

One small ImageNet-shaped CNN (``smallcnn`` in ``bench_models.py``: 3x224x224 in, 1000 classes, well under a
millisecond per image, so decoding and preprocessing dominate), exported once to TorchScript, served three
ways side by side (each client request is one raw JPEG body POSTed to TorchServe's ``/predictions/{model}``):

* (a) ``torchserve``: TorchServe 0.12 serving a .mar built with ``torch-model-archiver`` around that model, a
  custom handler (``image_handler.py``: Pillow decode, Resize(256), CenterCrop(224), ImageNet mean/std,
  model, softmax, top-5 ``{label: prob}``) and ``index_to_name.json``; TorchServe's batching on;
* (b) ``mar``: ``modelport serve`` on the SAME .mar, imported with ``modelport import-mar``: the handler runs
  inside modelport, its batches formed by modelport's batcher;
* (c) ``declarative``: ``modelport serve`` (the same server) on the TorchScript export with declarative
  processors in its ``config.yaml`` (an ``image`` step and a ``topk`` step, the same transforms);
* (d) ``v2-bytes``: model (c) over KServe v2, the JPEG one BYTES element (binary extension), JSON out.

Fair settings: TorchServe's ``batchSize``/``maxBatchDelay`` and both modelport models' ``max_batch_size``/
``max_queue_delay_ms`` come from ``--batch-size``/``--max-batch-delay-ms``; one compute thread everywhere
(``--threads``); TorchServe runs one worker. Servers are pinned to one core, the load generator (wrk with
``post.lua``, or ``loadgen.py`` without wrk) to another. ``--images`` distinct synthetic photos
(``--image-size``, default 500x375, JPEG quality 90) are sent in turn.

Before any load every system must give every image the same answer as TorchServe (the same labels in the
same order, probabilities within ``app_report.PROB_TOLERANCE``, relative); a system that does not is not timed. Cells
run in ``--rounds`` interleaved rounds (each round: every concurrency, every system in turn); each cell
reports the median req/s, p50 and p99 and the server's CPU time per request (utime+stime of its process tree
over the requests served: steadier than req/s on a shared machine), the share of a core it used
(``cpu_share``) and the share of the wall time its threads waited for a CPU while runnable
(``runqueue_wait_share``, schedstat). Well above 0, other processes on the server core took its time and the
cell's req/s are not the server's: the scheduler shares a core per thread, so a server with more busy
threads ((c), TorchServe) loses less of it than (b), whose handler runs in one thread. The targets are
printed as PASS/FAIL (informational: the exit status is non-zero only when a system failed to start,
answered wrongly or a cell failed). Defaults (10 s cells, 3 rounds, c=1/8/32) take about 7 minutes;
``--quick`` under a minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from app_report import (  # noqa: E402
    LABELS,
    SYSTEMS,
    ceiling_line,
    cell_line,
    compare,
    report_table,
    target_lines,
    targets,
)
from bench_models import MODELS, build  # noqa: E402
from serving_config import Config, add_run_arguments, run_config, run_meta  # noqa: E402
from serving_load import Payload, request_once, run_load  # noqa: E402
from serving_procs import (  # noqa: E402
    Server,
    cpu_seconds,
    repository_server,
    runqueue_wait_seconds,
    settle,
    torchserve_archive_server,
    wait_valid,
)
from serving_report import median_cell  # noqa: E402

from modelport.torchserve_process import archive, torchserve_missing  # noqa: E402

MODEL = MODELS["smallcnn"]
PROCESSORS = {
    "pre": [
        {
            "kind": "image",
            "exif_transpose": False,  # TorchServe's handlers ignore EXIF orientation
            "resize": 256,
            "center_crop": 224,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        }
    ],
    "post": [{"kind": "topk", "k": 5, "activation": "softmax"}],
}


def write_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` distinct photo-like JPEGs (smooth colour gradients, shapes, sensor noise) of ``size``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(7)
    width, height = size
    paths = []
    for i in range(count):
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        base = rng.uniform(0, 255, 3) + np.stack([xs / width, ys / height, (xs + ys) / (width + height)], -1) * 90
        noisy = base + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.ellipse((x, y, x + int(rng.integers(20, width // 2)), y + int(rng.integers(20, height // 2))), fill)
        paths.append(folder / f"image{i}.jpg")
        image.save(paths[-1], "JPEG", quality=90)
    return paths


def build_archives(cfg: Config, work: Path) -> tuple[Path, Path]:
    """Export the model, archive it with the handler (the .mar TorchServe serves), ``modelport import-mar``
    it next to the declarative model; the .mar and the repository modelport serves."""
    import modelport
    from modelport.cli import main as modelport_cli
    from modelport.exporters.mar_handler import update_config

    repo = work / "repo"
    spec = modelport.TensorSpec.parse("input:float32:-1x" + "x".join(map(str, MODEL.input_shape)))
    modelport.export(source=build(MODEL.name), repository=repo, name=MODEL.name, formats=("torchscript",),
                     inputs=(spec,), output_names=("logits",), quiet=True)  # fmt: skip
    declarative = repo / f"{MODEL.name}-torchscript"
    labels = declarative / "1" / "index_to_name.json"
    labels.write_text(json.dumps({str(i): f"class{i:03d}" for i in range(MODEL.output_width)}))
    store = work / "torchserve" / "store"
    mar = archive(declarative / "1" / "model.pt", HERE / "image_handler.py", MODEL.name, store, extra_files=[labels])
    batch = ["--max-batch-size", str(cfg.ts_batch_size)]  # TorchServe's batchSize (the handler's default is 1)
    imported = modelport_cli(["import-mar", str(mar), "--repository", str(repo), "--quiet", *batch])
    if imported != 0:
        raise RuntimeError(f"modelport import-mar {mar} failed ({imported})")
    batching = {"max_batch_size": cfg.ts_batch_size, "max_queue_delay_ms": cfg.ts_max_batch_delay_ms}
    update_config(repo / MODEL.name, batching)
    update_config(declarative, {**batching, "processors": PROCESSORS})
    return mar, repo


def payloads(images: list[Path], folder: Path) -> dict[str, Payload]:
    """Each system's request, cycling through ``images``: a raw JPEG body to its model's /predictions, or for
    (d) a KServe v2 request with the JPEG as a BYTES element (binary extension) in and JSON out."""
    paths = {"torchserve": MODEL.name, "mar": MODEL.name, "declarative": f"{MODEL.name}-torchscript"}
    loads = {
        system: Payload("predictions", f"/predictions/{model}", images[0], 5, "image/jpeg", None, tuple(images[1:]))
        for system, model in paths.items()
    }
    bodies, length = v2_bytes_bodies(images, folder)
    v2 = f"/v2/models/{MODEL.name}-torchscript/infer"
    loads["v2-bytes"] = Payload("v2-bytes", v2, bodies[0], 5, "application/octet-stream", length, tuple(bodies[1:]))
    return loads


def v2_bytes_bodies(images: list[Path], folder: Path) -> tuple[list[Path], int]:
    """One v2 binary-extension body per image (input ``image``: one BYTES element, its 4-byte length then the
    JPEG; output ``output`` as JSON) and the JSON header's length, the same for all: the shorter headers are
    padded with spaces, so that one ``Inference-Header-Content-Length`` fits every body."""
    headers = []
    for image in images:
        item = {"name": "image", "shape": [1], "datatype": "BYTES"}
        item["parameters"] = {"binary_data_size": 4 + image.stat().st_size}
        headers.append(json.dumps({"inputs": [item], "outputs": [{"name": "output"}]}).encode())
    length = max(map(len, headers))
    paths = [folder / f"{image.stem}.v2.bin" for image in images]
    for path, header, image in zip(paths, headers, images, strict=True):
        data = image.read_bytes()
        path.write_bytes(header.ljust(length) + len(data).to_bytes(4, "little") + data)
    return paths, length


def answer(server: Server, payload: Payload, body: Path) -> Any:
    """The parsed JSON answer of ``server`` to one body (raises on any failure); for v2, the output's element."""
    import urllib.request

    request = urllib.request.Request(server.url + payload.path, data=body.read_bytes(), headers=payload.headers())
    with urllib.request.urlopen(request, timeout=30) as response:
        parsed = json.loads(response.read())
    return json.loads(parsed["outputs"][0]["data"][0]) if payload.protocol == "v2-bytes" else parsed


def check_answers(running: dict[str, Server], loads: dict[str, Payload], images: list[Path]) -> dict[str, Any]:
    """Every system's answer to every image against TorchServe's; a system that differs gets an ``error``."""
    checked: dict[str, Any] = {}
    reference = running["torchserve"]
    expected = [answer(reference, loads["torchserve"], image) for image in images]
    for system, payload in loads.items():
        server = running[server_of(system)]
        problems, worst, answers = [], 0.0, []
        for image, body, wanted in zip(images, payload.bodies(), expected, strict=True):
            try:
                answers.append(answer(server, payload, body))
                problem, difference = compare(wanted, answers[-1])
            except (OSError, ValueError) as exc:
                problem, difference = f"{type(exc).__name__}: {exc}", None
            worst = max(worst, difference or 0.0)
            if problem is not None:
                problems.append(f"{image.name}: {problem}")
        checked[system] = {"answers": answers, "max_relative_difference": worst, "error": "; ".join(problems) or None}
        same = f"same top-5 on {len(images)} images (probabilities within {worst:.1e}, relative)"
        print(f"  answers {LABELS[system]:19s} " + (problems[0] if problems else same))
    return checked


def server_of(system: str) -> str:
    return "torchserve" if system == "torchserve" else "modelport"


@contextmanager
def servers(cfg: Config, mar: Path, repo: Path, work: Path, loads: dict[str, Payload]) -> Iterator[dict[str, Server]]:
    """TorchServe on the .mar, then modelport on the repository, each started alone until its first valid answer."""
    with ExitStack() as stack:
        started = {
            "torchserve": stack.enter_context(torchserve_archive_server(cfg, mar, mar.parent.parent)),
        }
        wait_valid(started["torchserve"], loads["torchserve"], cfg.startup_timeout)
        started["modelport"] = stack.enter_context(repository_server(cfg, repo, work))
        wait_valid(started["modelport"], loads["mar"], cfg.startup_timeout)
        for name, server in started.items():
            print(f"  {name}: " + (f"ready in {server.startup_s:.2f}s" if server.error is None else server.error))
        yield started


def run_cell(
    cfg: Config, system: str, concurrency: int, running: dict[str, Server], payload: Payload
) -> dict[str, Any]:
    """Once every server is idle, one valid request, then one cell of load; with the server's CPU per request."""
    server = running[server_of(system)]
    cell: dict[str, Any] = {"system": system, "concurrency": concurrency}
    if server.error is not None or server.proc is None:
        return {**cell, "error": f"server failed: {server.error}", "rps": 0.0, "errors": -1}
    settle(running.values())
    problem = request_once(server.url, None, payload)
    if problem is not None:
        return {**cell, "error": f"verification failed: {problem}", "rps": 0.0, "errors": -1}
    before, waited = cpu_seconds(server.proc.pid), runqueue_wait_seconds(server.proc.pid)
    load = run_load(cfg, server.url, None, payload, concurrency)
    spent = cpu_seconds(server.proc.pid) - before
    cell.update(load, errors=load["non_2xx"] + load["socket_errors"])
    cell["cpu_ms_per_request"] = 1e3 * spent / load["requests"] if load["requests"] else None
    cell["cpu_share"] = spent / load["seconds"]  # of one core: ~1 when the server is the bottleneck
    cell["runqueue_wait_share"] = (runqueue_wait_seconds(server.proc.pid) - waited) / load["seconds"]
    print("  " + cell_line(cell))
    return cell


def measure(cfg: Config, running: dict[str, Server], loads: dict[str, Payload], broken: set[str]) -> list[Any]:
    """Every (concurrency, system) cell over the interleaved rounds, as medians."""
    systems = [s for s in cfg.systems if s not in broken]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for round_ in range(1, cfg.rounds + 1):
        print(f"  round {round_} of {cfg.rounds}")
        for concurrency in cfg.concurrency:
            for system in systems:
                runs.setdefault((concurrency, system), []).append(
                    run_cell(cfg, system, concurrency, running, loads[system])
                )
    cells = [median_cell(runs[(c, s)]) for c in cfg.concurrency for s in systems]
    for cell, key in itertools.product(cells, ("cpu_ms_per_request", "cpu_share", "runqueue_wait_share")):
        measured = [r[key] for r in cell["rounds"] if r.get(key) is not None]
        cell[key] = statistics.median(measured) if measured else None
    return cells


def handler_ceiling(cfg: Config, repo: Path, images: list[Path]) -> dict[str, Any]:
    """``handler_ceiling.py`` on the imported archive, pinned to the server core: the handler alone, in process,
    the most req/s any server running it can reach there (``{"error": ...}`` if it could not run)."""
    version = max((p for p in (repo / MODEL.name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    command = [sys.executable, str(HERE / "handler_ceiling.py"), str(version), *map(str, images)]
    command += ["--batch-size", str(cfg.ts_batch_size), "--threads", str(cfg.threads or 1), "--seconds", "3"]
    command += ["--cpu", str(cfg.server_cpu if cfg.server_cpu is not None else -1)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-2000:]}
    print("  " + done.stdout.splitlines()[0])
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def bench(cfg: Config, work: Path, images: list[Path]) -> dict[str, Any]:
    """Build, time the handler alone, start, check the answers, measure: the run's result."""
    mar, repo = build_archives(cfg, work)
    ceiling = handler_ceiling(cfg, repo, images)
    loads = payloads(images, work)
    with servers(cfg, mar, repo, work, loads) as running:
        info = {name: {"startup_s": s.startup_s, "error": s.error} for name, s in running.items()}
        if any(s.error for s in running.values()):
            return {"servers": info, "handler_alone": ceiling, "answers": {}, "cells": []}
        answers = check_answers(running, {s: loads[s] for s in cfg.systems}, images)
        broken = {system for system, checked in answers.items() if checked["error"]}
        cells = measure(cfg, running, loads, broken)
    return {"servers": info, "handler_alone": ceiling, "answers": answers, "cells": cells}


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    parser.add_argument("--images", type=int, default=4, help="distinct JPEGs, sent in turn")
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--batch-size", type=int, default=32, help="max batch size, every system")
    parser.add_argument("--max-batch-delay-ms", type=int, default=2, help="longest wait to fill a batch, every system")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "app_serving.json")
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    if "torchserve" not in systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems: a comma list of {', '.join(SYSTEMS)} including torchserve (the reference)")
    cfg = run_config(
        args,
        models=[MODEL.name],
        ts_batch_size=args.batch_size,
        ts_max_batch_delay_ms=args.max_batch_delay_ms,
        out=args.out,
        systems=[s for s in SYSTEMS if s in systems],
    )
    return cfg, args


def meta(cfg: Config, argv: list[str] | None, args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    """What the JSON records about the run itself."""
    import PIL
    import torch

    import modelport

    return {
        **run_meta(cfg, "app_serving.py", argv),
        "batching": {"max_batch_size": cfg.ts_batch_size, "max_batch_delay_ms": cfg.ts_max_batch_delay_ms},
        "model": MODEL.name,
        "images": {p.name: p.stat().st_size for p in images},
        "image_size": args.image_size,
        "versions": {"modelport": modelport.__version__, "torch": torch.__version__, "pillow": PIL.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    missing = torchserve_missing()
    if missing:
        print(f"TorchServe cannot run here: {missing}")
        return 2
    print(f"load generator: {cfg.loadgen}; servers on cpu {cfg.server_cpu}, client on cpu {cfg.client_cpu}")
    work = Path(tempfile.mkdtemp(prefix="modelport-app-bench-"))
    try:
        width, height = (int(v) for v in args.image_size.split("x"))
        images = write_images(work, args.images, (width, height))
        result = bench(cfg, work, images)
        report = {"meta": meta(cfg, argv, args, images), **result, "targets": targets(result["cells"])}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + report_table(report["cells"]) + "\n\n" + target_lines(report["targets"]))
    if "handler_alone" in report:
        print(ceiling_line(report["handler_alone"], report["cells"]))
    print(f"\nload generator: {cfg.loadgen}; results: {cfg.out}")
    failed = any(s["error"] for s in report["servers"].values()) or not report["cells"]
    failed |= any(a["error"] for a in report["answers"].values())
    failed |= any(c.get("error") for c in report["cells"])
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
