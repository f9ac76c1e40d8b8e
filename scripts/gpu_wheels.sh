#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on the borrowed GPU machine (Python 3.12, x86-64, no network)
# into .gpu-wheels/ (git-ignored; carried along with the working tree). Run here, where PyPI is reachable:
#     bash scripts/gpu_wheels.sh [DEST]        (GPU_PYTHON_VERSION=3.11 for another interpreter, e.g. a dry run)
# --no-deps with every name pinned in scripts/gpu_wheels.txt: nothing is resolved, nothing extra comes along.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu-wheels}
python=${PYTHON:-python3}
version=${GPU_PYTHON_VERSION:-3.12}
mapfile -t pins < <(grep -Ev '^\s*(#|$)' scripts/gpu_wheels.txt)
mkdir -p "$dest"
echo "==> downloading ${#pins[@]} wheels for CPython $version manylinux x86-64 into $dest/"
"$python" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp --abi "cp${version/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$dest" "${pins[@]}"
# a wheel left from an older pin would be installed too: keep exactly the pinned ones
mapfile -t wanted < <(printf '%s\n' "${pins[@]}" | sed -E 's/==/-/; s/[-_.]+/_/g; s/.*/\L&/')
for wheel in "$dest"/*.whl; do
    stem=$(basename "$wheel" | cut -d- -f1-2 | sed -E 's/[-_.]+/_/g; s/.*/\L&/')
    printf '%s\n' "${wanted[@]}" | grep -qxF "$stem" || { echo "    removing stale $(basename "$wheel")"; rm -f "$wheel"; }
done
count=$(find "$dest" -name '*.whl' | wc -l)
[[ $count -eq ${#pins[@]} ]] || { echo "gpu_wheels: expected ${#pins[@]} wheels in $dest, found $count" >&2; exit 1; }
echo "==> $count wheels, $(du -sh "$dest" | cut -f1) in $dest/ (carry it: the GPU machine takes at most 64 MiB in all)"
