# Fresh machine: `make demo` runs the main job on the embedded tiny model; `make test` runs the test suite.
# Both create .venv and install pinned dependencies (torch==2.13.0 first) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TensorRT's type stubs, for tests/tensorrt/test_tensorrt.py's mypy run only: kept out of the venv (where `import tensorrt`
# would find them) and out of git.
TRT_STUBS_VERSION := 10.13.0.35.1
TYPING := .typing/tensorrt_stubs-$(TRT_STUBS_VERSION).dist-info

.PHONY: install triton-env demo test test-network test-slow gpu-check gpu-install clean

install: $(STAMP) $(TYPING)

# torch first, alone and pinned as in requirements.txt: the CPU wheel, not a multi-GB CUDA build.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$(grep '^torch==' requirements.txt)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

$(TYPING): $(STAMP)
	$(PY) -m pip install -q --no-deps --target .typing --upgrade tensorrt-stubs==$(TRT_STUBS_VERSION)

# The Python that runs janus-edge inside tritonserver's Python backend (tests/serve/test_triton.py). The stub bundled in
# nvidia-pytriton 0.7.0 links the system's libpython3.11, so this venv must come from Debian's /usr/bin/python3.11
# (a venv from another 3.11 build fails inside the stub), and numpy must be 1.x (the stub's BYTES tensors came out
# garbled with numpy 2). The wheel also carries the tritonserver 2.51 binary the test starts. Skipped, with a note,
# where there is no /usr/bin/python3.11: the Triton test then skips too.
SYSTEM_PYTHON311 ?= /usr/bin/python3.11
TRITON_VENV := $(VENV)/triton-backend
TRITON_STAMP := $(TRITON_VENV)/.installed
TRITON_PINS := numpy==1.26.4 pillow==13.0.0 tokenizers==0.23.3 onnxruntime==1.32.0

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP): $(STAMP)
	@if [ -x $(SYSTEM_PYTHON311) ]; then \
	  $(SYSTEM_PYTHON311) -m venv $(TRITON_VENV) && \
	  $(TRITON_VENV)/bin/python -m pip install -q $(TRITON_PINS) && \
	  $(TRITON_VENV)/bin/python -m pip install -q --no-deps nvidia-pytriton==0.7.0 && \
	  $(TRITON_VENV)/bin/python -m pip install -q --no-deps -e . && touch $@; \
	else echo "no $(SYSTEM_PYTHON311): the live Triton test will be skipped"; fi

demo: $(STAMP)
	$(VENV)/bin/janus-edge demo --out out/demo

# Every test but the `slow` and `network` ones (pyproject's addopts), grouped by stage under tests/ (README "Tests").
test: $(STAMP) $(TRITON_STAMP) $(TYPING)
	$(PY) -m pytest -q

# The tests that ask the package index (pins resolving for GPU machines, the wheel installed into fresh venvs, the
# gpu-check venv); each skips when the index cannot be reached. Out of `make test`; CI may run it too.
test-network: $(STAMP)
	$(PY) -m pytest -q -m network

# Full-size runs (Janus-Pro-1B and -7B configs, random weights; README "Tests"): about 55 minutes on 2 cores, < 20 GB
# of RAM, 35 GB of disk at a time; not in CI.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -s

# On the GPU machine, after `make gpu-install`: `janus-edge gpu-check` on EXPORT (an export made anywhere, e.g. a
# tiny one from a workstation: `janus-edge tiny t && janus-edge export t tiny-export`, copied over), or, without
# EXPORT, on a tiny export made here first (that needs the export extra: torch, Python 3.11+). Builds engines for
# this GPU, compares them with ONNX Runtime on the CPU; the report to send back is $(GPU_CHECK_OUT)/report.json.
GPU_CHECK_OUT := out/gpu-check
EXPORT ?=
gpu-check:
	@test -x $(VENV)/bin/janus-edge || { echo "gpu-check: no $(VENV); fix: make gpu-install"; exit 2; }
	@mkdir -p $(GPU_CHECK_OUT)
	@if [ -z "$(EXPORT)" ] && [ ! -f $(GPU_CHECK_OUT)/export/janus_edge.json ]; then \
	  $(VENV)/bin/janus-edge tiny $(GPU_CHECK_OUT)/tiny && \
	  $(VENV)/bin/janus-edge export $(GPU_CHECK_OUT)/tiny $(GPU_CHECK_OUT)/export --max-context 2048; fi
	$(VENV)/bin/janus-edge gpu-check $(or $(EXPORT),$(GPU_CHECK_OUT)/export) --json $(GPU_CHECK_OUT)/report.json

# On a Jetson (JetPack 6.x / 7.x) or an NGC TensorRT container: a venv that sees the system TensorRT
# (--system-site-packages) with the runtime, ONNX Runtime and the TensorRT extra whose cuda-python matches the
# driver: the driver's CUDA major from libcuda's cuDriverGetVersion (ctypes, works where nvidia-smi is absent, as on
# JetPack 6): 12 -> `tensorrt` (cuda-python 12), 13 or newer -> `tensorrt-cu13` (cuda-python 13, driver >= 580).
# On an x86 machine without a system TensorRT, install TensorRT 10.x for its CUDA first (see docs/jetson.md).
CUDA_DRIVER_MAJOR = $(shell $(PYTHON) -c "import ctypes; v = ctypes.c_int(); ctypes.CDLL('libcuda.so.1').cuDriverGetVersion(ctypes.byref(v)); print(v.value // 1000)" 2>/dev/null)

gpu-install:
	@if [ -z "$(CUDA_DRIVER_MAJOR)" ] || [ "$(CUDA_DRIVER_MAJOR)" = 0 ]; then \
	  echo "gpu-install: no NVIDIA driver found (libcuda.so.1); fix: install the driver (Jetson: JetPack) first"; exit 2; fi
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	extra=$$([ $(CUDA_DRIVER_MAJOR) -ge 13 ] && echo tensorrt-cu13 || echo tensorrt); \
	  if $(PY) -c "import onnxruntime as o, sys; sys.exit(not {'CUDAExecutionProvider', 'TensorrtExecutionProvider'} & set(o.get_available_providers()))" 2>/dev/null; \
	  then echo "keeping the system's onnxruntime-gpu (the CPU wheel would shadow it)"; else extra="$$extra,onnxruntime"; fi; \
	  echo "driver supports CUDA $(CUDA_DRIVER_MAJOR): installing janus-edge[$$extra]"; \
	  $(PY) -m pip install -q -e ".[$$extra]"
	$(PY) -c "import tensorrt; print('TensorRT', tensorrt.__version__)" || echo "TensorRT not visible: see docs/jetson.md"
	touch $(STAMP)

clean:
	rm -rf out .pytest_cache
