# modelport: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
DEMO   := demo-out
SHELL  := /bin/bash
# Azurite, Microsoft's Azure Storage emulator (npm), which the az:// repository tests start: 3.35.0 is the
# newest release that runs on node 20 (3.36 needs node 21, 3.37 node 22)
AZURITE_VERSION := 3.35.0
AZURITE := .tools/azurite-$(AZURITE_VERSION).installed
# Triton's perf_analyzer, which tests/serving/test_perf_analyzer.py runs against the server: the binary of the
# tritonclient 2.41.1 wheel with libcudart (PyPI, pinned with hashes) and libb64 (Debian) beside it
PERF_ANALYZER := .tools/perf_analyzer/perf_analyzer

.PHONY: install native azurite perf-analyzer demo test lint format bench profile clean k8s-check edge-arm64 gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (modelport needs Python 3.11)"; exit 1; }
	@echo "==> creating $(VENV) and installing modelport[all,dev] (CPU runtime; pinned by constraints.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip wheel > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@echo "    resolving and downloading (a fresh machine fetches ~2 GB: TensorFlow, PyTorch CPU, onnxruntime, LiteRT, ...); log: $(VENV)/install.log"
	@set -o pipefail; $(PIP) install -c constraints.txt -e '.[all,dev]' 2>&1 | tee -a $(VENV)/install.log | \
		awk '/^Collecting /{n++; if (n % 25 == 0) {printf "    %d packages resolved\n", n; fflush()}} \
		     /^Installing collected packages/{printf "    %d packages resolved; installing them (about a minute)\n", n; fflush()}' \
		|| { tail -40 $(VENV)/install.log; exit 1; }
	@echo "    checking dependencies (pip check)"
	@$(PIP) check
	@touch $(STAMP)
	@echo "==> installed"

# the serving hot path compiled with mypyc (modelport/serving/native.py): rebuilt when any source changes;
# `make test` needs it (MODELPORT_NATIVE=require), elsewhere a machine without a C compiler runs the Python
NATIVE := build/native/stamp.json

native: $(NATIVE)

$(NATIVE): $(STAMP) $(shell find modelport -name '*.py')
	@echo "==> compiling the serving hot path with mypyc into build/native/ (about a minute; log: build/native.log)"
	@mkdir -p build && $(PY) -c "from modelport.serving.native import main; raise SystemExit(main(['build']))" \
		> build/native.log 2>&1 || { tail -20 build/native.log; echo "make: the hot path was not compiled (no C compiler?); modelport runs its Python sources"; exit 1; }

azurite: $(AZURITE)

$(AZURITE): scripts/azurite/package.json scripts/azurite/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm not found (Azurite, for the az:// tests, needs node >= 20)"; exit 1; }
	@echo "==> installing Azurite $(AZURITE_VERSION) into .tools/ (a local Azure Blob API for the az:// tests)"
	@mkdir -p .tools && cp scripts/azurite/package.json scripts/azurite/package-lock.json .tools/ && \
		npm ci --prefix .tools --no-audit --no-fund > .tools/install.log 2>&1 || { tail -40 .tools/install.log; exit 1; }
	@touch $@

perf-analyzer: $(PERF_ANALYZER)

$(PERF_ANALYZER): scripts/perf_analyzer/requirements.txt scripts/perf_analyzer/install.sh | $(STAMP)
	@echo "==> installing Triton's perf_analyzer (tritonclient 2.41.1) into .tools/perf_analyzer/"
	@bash scripts/perf_analyzer/install.sh $(PY) .tools/perf_analyzer

demo: install
	@$(MAKE) --no-print-directory native || true
	@$(PY) examples/digits/demo.py --out $(DEMO)

# the demo's edge bundles, verified and benchmarked in an emulated aarch64 Debian (root; ~10 min the first time)
edge-arm64: install
	@test -f $(DEMO)/bundles/digits-keras/bundle.json -a -f $(DEMO)/bundles/digits-torch/bundle.json || $(MAKE) demo
	@scripts/edge_arm64.sh $(DEMO)/bundles/digits-torch $(DEMO)/bundles/digits-keras

lint: install
	@echo "==> ruff check"; $(VENV)/bin/ruff check .
	@echo "==> ruff format --check"; $(VENV)/bin/ruff format --check .
	@echo "==> mypy --strict modelport"; $(VENV)/bin/mypy
	@echo "==> lint-imports (layers, no cycles; contracts in pyproject.toml)"; $(VENV)/bin/lint-imports --no-cache

format: install
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# k8s/ rendered with kubectl kustomize and validated (kubernetes-validate --strict, JSON schemas for the
# KServe and Prometheus Operator resources), Dockerfiles linted with hadolint, both checked against the code
k8s-check: install
	@echo "==> k8s-check (kustomize, kubernetes-validate --strict, hadolint, manifests and PromQL vs code)"
	@$(PY) -m pytest tests/k8s -q -p no:cacheprovider

# the suite runs on up to 4 cores (pytest-xdist; every test gets its own free ports and temporary folders):
# ~11 min on 2 cores, where it took ~26 one test at a time. `make test JOBS=0` runs it in one process.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

test: lint k8s-check $(AZURITE) $(PERF_ANALYZER) $(NATIVE)
	@echo "==> pytest (the whole suite, $(JOBS) worker processes, the compiled hot path)"
	@MODELPORT_NATIVE=require $(PY) -m pytest -n $(JOBS)

bench: install
	@$(MAKE) --no-print-directory native || true
	@$(PY) benchmarks/formats.py
	@$(PY) benchmarks/serving.py

# the GPU check: downloads the wheels it needs into .gpu-wheels/ (no venv; needs PyPI), then says how to run it
# on the GPU machine (Python 3.12 with CUDA torch, no network), where .gpu-wheels/ is carried with the tree
gpu-check:
	@PYTHON=$(PYTHON) bash scripts/gpu_wheels.sh
	@echo "==> on the GPU machine, from a copy of this tree with .gpu-wheels/ carried (< 6 minutes):"
	@echo "    bash scripts/gpu_check.sh OUTDIR      # then read OUTDIR/gpu_check.json, pytest.txt, summary.txt"

# py-spy profiles (speedscope + flamegraph SVG) of the server under the MLP at c=32, KServe v2 JSON
profile: install
	@$(MAKE) --no-print-directory native || true
	@$(PY) benchmarks/serving.py --models mlp --concurrency 32 --systems v2-json --rounds 1 --no-workers-scaling \
		--profile benchmarks/results/profile --out benchmarks/results/profile/serving.json

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache examples/digits/artifacts .gpu-wheels
