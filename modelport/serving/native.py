"""The serving hot path compiled to C with mypyc, when it has been built and matches the sources.

The modules of :data:`HOT_MODULES` (the HTTP protocol, the inference front, the KServe v2 codec, the data
plane, the batcher and the metrics they observe per request; with tracing on, a request's span and, in the
exporter process, its OTLP encoding) are plain, strictly typed Python; mypyc (part
of mypy, the type checker the project already runs) compiles them to C extension modules that do the same
work in about a third less CPU a request (``benchmarks/hotpath_inprocess.py --checkout``). Nothing else
changes: the Python sources stay the reference and run wherever no build is present.

``make native`` (which ``make test``, ``make demo`` and ``make bench`` run; ``native.main(["build"])``) writes the
extensions into ``build/native/`` beside the package, with a stamp of every source file's sha256 under
``modelport/`` (mypy reads them all to compile the hot ones) and of the interpreter's ABI. At
``import modelport.serving``, :func:`activate` puts that folder first on the package's path only when the
stamp still matches every source: an edited checkout runs its Python until it is built again, never a
stale extension. ``MODELPORT_NATIVE=0`` runs the Python sources whatever is built;
``MODELPORT_NATIVE_DIR`` names another build folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

__all__ = ["GROUP", "HOT_MODULES", "activate", "active", "build", "default_dir", "sources_digest"]

HOT_MODULES = (
    "modelport.serving.httpproto",
    "modelport.serving.front",
    "modelport.serving.v2",
    "modelport.serving.dataplane",
    "modelport.serving.batching",
    "modelport.serving.metrics",
    "modelport.serving.histograms",
    "modelport.serving.requestid",
    "modelport.serving.v2_http",
    "modelport.serving.httputil",
    "modelport.serving.model",
    "modelport.serving.statistics",
    "modelport.serving.deadlines",
    "modelport.serving.tracing",
    "modelport.serving.tracing_otel",
    "modelport.serving.tracing_sampling",
    "modelport.serving.tracing_otlp",
    "modelport.serving.tracing_records",
)
GROUP = "modelport_native"  # the shared library every compiled module links: ``modelport_native__mypyc``
STAMP = "stamp.json"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../modelport
_OFF = ("0", "false", "no", "off")
_active = False


def default_dir() -> Path:
    """``MODELPORT_NATIVE_DIR``, else ``build/native`` beside the ``modelport`` package (a checkout's root)."""
    configured = os.environ.get("MODELPORT_NATIVE_DIR")
    return Path(configured) if configured else _PACKAGE_ROOT.parent / "build" / "native"


def _abi() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


def sources_digest(root: Path = _PACKAGE_ROOT) -> str:
    """One sha256 over every ``.py`` file under ``root`` (names and contents, in a fixed order)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _stamp_text(digest: str) -> str:
    return f"{_abi()}\n{' '.join(HOT_MODULES)}\n{digest}\n"


def active() -> bool:
    """Whether this process runs the compiled hot path."""
    return _active


def activate(package_path: list[str], where: Path | None = None) -> bool:
    """Put the compiled modules first on ``package_path`` (``modelport.serving.__path__``) when a build in
    ``where`` (default :func:`default_dir`) matches this interpreter and every source: whether it did.
    ``MODELPORT_NATIVE=0`` never does; ``MODELPORT_NATIVE=require`` raises ``ImportError`` where it cannot."""
    global _active
    if _active:
        return True
    mode = os.environ.get("MODELPORT_NATIVE", "1").strip().lower()
    if mode in _OFF:
        return False
    where = where or default_dir()
    why = _unusable(where)
    if why is None:
        library = where / f"{GROUP}__mypyc{sysconfig.get_config_var('EXT_SUFFIX')}"
        spec = importlib.util.spec_from_file_location(f"{GROUP}__mypyc", library)
        if library.is_file() and spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            package_path.insert(0, str(where / "modelport" / "serving"))
            _active = True
            return True
        why = f"{library.name} is missing"
    if mode == "require":
        raise ImportError(f"MODELPORT_NATIVE=require: the compiled hot path in {where} {why} (make native builds it)")
    return False


def _unusable(where: Path) -> str | None:
    """Why the build in ``where`` cannot run here, or None."""
    try:
        stamp = (where / STAMP).read_text()
    except OSError:
        return "is not built"
    if stamp != _stamp_text(sources_digest()):
        return "was built from other sources or for another Python"
    return None


def build(where: Path | None = None) -> Path:
    """Compile :data:`HOT_MODULES` with mypyc into ``where`` (default :func:`default_dir`) and stamp it."""
    import shutil
    import tempfile

    from mypyc.build import mypycify

    setuptools: Any = importlib.import_module("setuptools")  # untyped; mypyc's extensions are its Extensions

    where = (where or default_dir()).resolve()
    digest = sources_digest()  # before compiling: an edit meanwhile leaves the build stale, not wrong
    paths = [str(Path(*name.split("."))) + ".py" for name in HOT_MODULES]
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="modelport-native-") as work:
        os.chdir(_PACKAGE_ROOT.parent)  # mypycify names modules by their paths from the package's parent
        try:
            extensions = mypycify(paths, group_name=GROUP, target_dir=str(Path(work) / "c"))
            distribution = setuptools.Distribution({"name": GROUP, "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(Path(work) / "lib")
            command.build_temp = str(Path(work) / "temp")
            distribution.run_command("build_ext")
        finally:
            os.chdir(cwd)
        if where.exists():
            shutil.rmtree(where)
        shutil.copytree(Path(work) / "lib", where)
    (where / STAMP).write_text(_stamp_text(digest))
    return where


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "build" or len(args) > 2:
        print('usage: main(["build", DIR])', file=sys.stderr)
        return 2
    where = build(Path(args[1]) if len(args) == 2 else None)
    print(f"compiled {len(HOT_MODULES)} hot-path modules with mypyc into {where}")
    return 0
