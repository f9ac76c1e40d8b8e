#!/usr/bin/env bash
# Put a runnable Triton perf_analyzer under DEST (.tools/perf_analyzer): DEST/perf_analyzer is a wrapper that sets
# LD_LIBRARY_PATH to DEST/lib and runs DEST/bin/perf_analyzer. Everything comes from the package registries: the pinned,
# hash-checked wheels of requirements.txt (PyPI) and libb64.so.0d from Debian's libb64-0d (apt-get download; no root
# needed, but a machine with empty apt lists needs `apt-get update`, done here when running as root).
# usage: install.sh PYTHON DEST
set -euo pipefail
PYTHON=$1
DEST=$2
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[ "$(uname -m)" = x86_64 ] || { echo "perf_analyzer: the wheel's binary is x86_64 only (this is $(uname -m))"; exit 1; }
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || { echo "perf_analyzer: needs apt-get and dpkg-deb (Debian/Ubuntu) for libb64.so.0d"; exit 1; }

"$PYTHON" -m pip --disable-pip-version-check download -q --no-deps --only-binary=:all: --require-hashes \
    -r "$HERE/requirements.txt" -d "$WORK/wheels"

if ! (cd "$WORK" && apt-get download -q libb64-0d >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] || { echo "perf_analyzer: 'apt-get download libb64-0d' failed (run 'apt-get update' as root)"; exit 1; }
    apt-get update -q >/dev/null
    (cd "$WORK" && apt-get download -q libb64-0d >/dev/null)
fi
dpkg-deb -x "$WORK"/libb64-0d_*.deb "$WORK/deb"

rm -rf "$DEST" && mkdir -p "$DEST/bin" "$DEST/lib"
"$PYTHON" - "$WORK/wheels" "$DEST" <<'PY'
import sys, zipfile
from pathlib import Path

wheels, dest = Path(sys.argv[1]), Path(sys.argv[2])
wanted = {"data/bin/perf_analyzer": dest / "bin" / "perf_analyzer", "cuda_runtime/lib/libcudart.so.12": dest / "lib" / "libcudart.so.12"}
for wheel in wheels.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            for suffix, target in wanted.items():
                if member.endswith(suffix):
                    target.write_bytes(archive.read(member))
missing = [str(t) for t in wanted.values() if not t.exists()]
if missing:
    sys.exit(f"perf_analyzer: not found in the wheels: {missing}")
PY
cp -L "$(find "$WORK/deb" -name 'libb64.so.0d' | head -1)" "$DEST/lib/libb64.so.0d"
chmod +x "$DEST/bin/perf_analyzer"
cat > "$DEST/perf_analyzer" <<'SH'
#!/bin/sh
# Triton's perf_analyzer (tritonclient 2.41.1) with the libraries installed beside it (scripts/perf_analyzer/install.sh)
HERE=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$HERE/bin/perf_analyzer" "$@"
SH
chmod +x "$DEST/perf_analyzer"
"$DEST/perf_analyzer" --version >/dev/null 2>&1 \
    || { echo "perf_analyzer: installed but does not start:"; "$DEST/perf_analyzer" --version 2>&1 | tail -5; exit 1; }
