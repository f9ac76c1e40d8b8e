#!/usr/bin/env bash
# The GPU check, one bounded run (< 6 minutes) on the borrowed GPU machine: one NVIDIA H100/H200, Python 3.12
# with torch (CUDA), numpy, onnx, onnxruntime (CPU), httpx, pytest ... but no network and no TensorFlow.
#     bash scripts/gpu_check.sh OUTDIR [BENCHMARK FLAGS]   (with .gpu-wheels/ carried along)
# BENCHMARK FLAGS go to benchmarks/gpu.py (default --device cuda; `--device cpu --quick` is a dry run).
# .gpu-wheels/ comes from `make gpu-check` (scripts/gpu_wheels.sh) on a machine that reaches PyPI.
# Steps: the device and versions, the wheels installed into a scratch --target folder, an import check,
# tests/test_gpu.py (-m gpu), then benchmarks/gpu.py --device cuda (export, in-process timings, served load).
# Everything lands in OUTDIR: gpu_check.json, pytest.txt, serve*.log, nvidia-smi.txt, steps.txt.
set -uo pipefail
[[ $# -ge 1 ]] || { echo "usage: bash scripts/gpu_check.sh OUTDIR [benchmarks/gpu.py flags]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
bench_flags=(--device cuda)
(($#)) && bench_flags=("$@")
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
deadline=$((SECONDS + 330)) # every step gets at most what is left of 5m30s (pip check and kills: < 6 min)
failed=()
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# step NAME CAP_SECONDS COMMAND...: run under `timeout` (the smaller of CAP and the time left), record the outcome
step() {
    local name=$1 cap=$2 left=$((deadline - SECONDS)) started=$SECONDS rc
    shift 2
    ((cap < left)) || cap=$left
    echo "==> $name (at most ${cap}s)"
    if ((cap <= 0)); then
        rc=124
    else
        timeout -k 5 "$cap" "$@"
        rc=$?
    fi
    ((rc == 124 || rc == 137)) && echo "    $name: timed out after ${cap}s"
    echo "$name rc=$rc seconds=$((SECONDS - started))" >>"$out/steps.txt"
    ((rc == 0)) || failed+=("$name (rc $rc)")
    return "$rc"
}

: >"$out/steps.txt"
step nvidia-smi 15 bash -c "set -o pipefail; nvidia-smi | tee '$out/nvidia-smi.txt'"

step versions 40 "$python" - <<'EOF'
import platform

import torch

print(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda})")
print(f"torch.cuda.is_available() = {torch.cuda.is_available()}", end="")
print(f": {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
try:
    import onnxruntime
except ImportError:
    print("onnxruntime: not installed")
else:
    providers = onnxruntime.get_available_providers()
    print(f"onnxruntime {onnxruntime.__version__}, providers {providers}")
    if "CUDAExecutionProvider" not in providers:
        print(
            "NOTE: onnxruntime-gpu (several hundred MB with its CUDA libraries) is too large to bring along\n"
            "      (a run carries at most 64 MiB), so the ONNX CUDA test, test_onnx_on_cuda_reproduces_golden_vectors,\n"
            "      is EXPECTED TO SKIP here; the torch CUDA tests must pass."
        )
EOF

site=$(mktemp -d /tmp/modelport-site.XXXXXX)
trap 'rm -rf "$site"' EXIT
if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
    echo "    $(find .gpu-wheels -name '*.whl' | wc -l) wheels, $(du -sh .gpu-wheels | cut -f1), into $site"
    step wheels 60 "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu-wheels/*.whl
else
    echo "no .gpu-wheels/*.whl: run \`make gpu-check\` where PyPI is reachable and carry .gpu-wheels" >&2
    failed+=("wheels (missing)")
fi
export PYTHONPATH="$site:$PWD"

step imports 40 "$python" -c '
import fastapi, grpc, pydantic, torch, uvicorn
import modelport.serving.grpc_v2, modelport.serving.server, modelport.runtimes.torch, modelport.exporters.torch_convert
print(f"    serving stack: fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, grpcio {grpc.__version__},",
      f"pydantic {pydantic.VERSION}; modelport imports on torch {torch.__version__}")
'
# conflicts between the carried wheels and what the machine has (informational)
timeout 15 "$python" -m pip check >"$out/pip_check.txt" 2>&1 || echo "    pip check: $(wc -l <"$out/pip_check.txt") line(s) in pip_check.txt"

step pytest-gpu 100 bash -c "set -o pipefail; $python -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider -q -ra \
    --junitxml='$out/pytest.xml' 2>&1 | tee '$out/pytest.txt'"

step benchmark 240 "$python" benchmarks/gpu.py "${bench_flags[@]}" --out "$out"

echo "==> steps (seconds): $(tr '\n' ';' <"$out/steps.txt")"
if ((${#failed[@]})); then
    echo "GPU CHECK FAILED: ${failed[*]}; see $out" | tee "$out/summary.txt"
    exit 1
fi
echo "GPU CHECK PASSED in ${SECONDS}s; see $out" | tee "$out/summary.txt"
