# Fresh machine: `make demo` runs the main job on the embedded tiny model; `make test` runs the test suite.
# Both create .venv and install pinned dependencies (torch==2.13.0 first) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow gpu-check gpu-install clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --target .typing --upgrade tensorrt-stubs==10.13.0.35.1  # for mypy only
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/janus-edge demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q

# Full-size runs (Janus-Pro-1B config with random weights): minutes and ~20 GB of RAM; not in CI.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -s

# On a machine with an NVIDIA GPU, TensorRT and cuda-python: build the tiny model's engines, run both pipelines
# on them and compare with ONNX Runtime on the CPU.
gpu-check: $(STAMP)
	$(PY) -m janus_edge.gpu_check --out out/gpu-check

# On a Jetson (JetPack 6.2 / 7.x) or an NGC TensorRT container: a venv that sees the system TensorRT
# (--system-site-packages), with the Jetson/TensorRT requirement set; then `make gpu-check`. On an x86 machine
# without a system TensorRT, install TensorRT for its CUDA first (see docs/jetson.md).
gpu-install:
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-jetson.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "import tensorrt; print('TensorRT', tensorrt.__version__)" || echo "TensorRT not visible: see docs/jetson.md"
	touch $(STAMP)

clean:
	rm -rf out .pytest_cache
