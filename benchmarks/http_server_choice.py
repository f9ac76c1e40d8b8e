"""Which HTTP server runs modelport's ASGI app fastest: uvicorn (httptools, uvloop) or granian (Rust, embedded).

Both serve the same app (``modelport.serving.rest.create_app`` over one data plane with the MLP bench
model), each in its own process pinned to the server core, granian embedded in the process's own
event loop (as modelport would run it: gRPC and the batchers share that loop). wrk drives KServe v2
JSON at each concurrency, alternating between the two servers for ``--rounds`` rounds; the report is
the median req/s of each and granian / uvicorn. granian is not a dependency: ``pip install
granian==2.8.9`` first. Measured 2026-12-05 (2 cores, busy machine): granian 0.78x at c=1, 0.91x at
c=32 (0.75x / 0.97x with its Rust task implementation), so modelport keeps uvicorn.

    python benchmarks/http_server_choice.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_models import MODELS, build  # noqa: E402
from serving_load import parse_wrk, write_payloads  # noqa: E402
from serving_procs import free_port, wait_answering  # noqa: E402

SERVERS = ("uvicorn", "granian")


def serve(which: str, port: int, repo: Path) -> None:
    """Run the app under ``which`` until killed (the child process's job)."""
    import uvloop

    from modelport.serving.rest import create_app
    from modelport.serving.server import build as build_plane
    from modelport.serving.settings import ServerSettings

    async def main() -> None:
        plane = build_plane(ServerSettings(repository=repo, grpc_port=-1, intra_op_threads=1))
        await plane.start()
        app = create_app(plane)
        if which == "uvicorn":
            import uvicorn

            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
            await uvicorn.Server(config).serve()
        else:
            from granian.constants import HTTPModes, Interfaces
            from granian.server.embed import Server

            server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, http=HTTPModes.http1)
            await server.serve()

    uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--serve", nargs=3, metavar=("SERVER", "PORT", "REPO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]) / "repo")
        return 0
    try:
        import granian  # noqa: F401
    except ImportError:
        print("granian is not installed: pip install granian==2.8.9")
        return 1
    import modelport

    work = Path(tempfile.mkdtemp(prefix="modelport-http-choice-"))
    model = MODELS["mlp"]
    spec = "x:float32:-1x" + "x".join(map(str, model.input_shape))
    modelport.export(source=build("mlp"), repository=work / "repo", name="mlp", formats=("onnx",),
                     inputs=(modelport.TensorSpec.parse(spec),), output_names=("y",), quiet=True)  # fmt: skip
    payload = write_payloads(model, work)["v2-json"]
    ports = {which: free_port() for which in SERVERS}
    child = ["taskset", "-c", "0", sys.executable, __file__, "--serve"]
    procs = {which: subprocess.Popen([*child, which, str(port), str(work)]) for which, port in ports.items()}
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for port in ports.values():
            wait_answering(f"http://127.0.0.1:{port}{payload.path}", payload.body_file.read_bytes(), 60.0)
        env = dict(os.environ, WRK_BODY_FILE=str(payload.body_file), WRK_CONTENT_TYPE=payload.content_type)
        env["WRK_HEADER_LENGTH"] = ""
        for _ in range(args.rounds):
            for concurrency in map(int, args.concurrency.split(",")):
                for which, port in ports.items():
                    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{args.duration}s", "--latency"]
                    cmd += ["-s", str(HERE / "post.lua"), f"http://127.0.0.1:{port}{payload.path}"]
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                    results.setdefault((which, concurrency), []).append(parse_wrk(done.stdout)["rps"])
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    for concurrency in map(int, args.concurrency.split(",")):
        uvicorn_rps = statistics.median(results[("uvicorn", concurrency)])
        granian_rps = statistics.median(results[("granian", concurrency)])
        ratio = granian_rps / uvicorn_rps
        print(f"c={concurrency:<3} uvicorn {uvicorn_rps:8.0f} req/s  granian {granian_rps:8.0f} req/s  x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
