# sap_ros: `make demo` (the main job) and `make test` on a fresh machine; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build by default; on a CUDA machine e.g. TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH_SPEC ?= torch==2.13.0
ROS_WHEELS := 'ros-jazzy-rclpy[fastrtps]' ros-jazzy-rmw-fastrtps-cpp ros-jazzy-sensor-msgs \
	ros-jazzy-std-msgs ros-jazzy-geometry-msgs ros-jazzy-visualization-msgs \
	ros-jazzy-diagnostic-msgs ros-jazzy-std-srvs ros-jazzy-lifecycle-msgs
PY_DEPS := numpy opencv-python-headless pyyaml tqdm pooch rosbags hydra-core iopath pillow scipy \
	py360convert matplotlib ray
DEV_DEPS := pytest pytest-timeout ruff mypy
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck demo bench bench-gpu clean
setup: $(STAMP)

# colcon (Debian packages) for test/test_packaging.py's `colcon build` check: installed only when
# missing and only as root (CI); otherwise that check skips and says why.
# rclpy from a sourced ROS install (ROS_DISTRO set, rclpy importable): reuse it through system
# site packages; otherwise install the ros-jazzy-* wheels from PyPI into the venv.
$(STAMP): setup.py Makefile
	@set -e; \
	if ! command -v colcon >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo '[setup] installing colcon and python3-colcon-ros (apt) for the packaging check'; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq colcon \
	      python3-colcon-ros >/dev/null) || echo '[setup] WARNING: apt could not install colcon'; \
	  else \
	    echo '[setup] colcon missing (not root): the colcon build check will skip;' \
	      'sudo apt-get install colcon python3-colcon-ros'; \
	  fi; \
	fi; \
	if $(PYTHON) -c 'import rclpy' >/dev/null 2>&1; then \
	  echo '[setup] rclpy found in the system ROS install: venv with system site packages'; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); ROS=0; \
	else \
	  echo '[setup] no system rclpy: installing the ros-jazzy-* wheels from PyPI'; \
	  $(PYTHON) -m venv $(VENV); ROS=1; \
	fi; \
	$(PIP) install -q --upgrade pip setuptools wheel; \
	$(PIP) install -q $(TORCH_SPEC); \
	$(PIP) install -q $(PY_DEPS) $(DEV_DEPS); \
	if [ $$ROS = 1 ]; then $(PIP) install -q $(ROS_WHEELS); fi; \
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-deps --no-build-isolation sam2==1.1.0; \
	$(PIP) install -q --no-deps --no-build-isolation -e .; \
	$(PY) -c 'import torch, sam2, rclpy, cv2, rosbags, pooch; print("[setup] torch", torch.__version__)'; \
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check sap_ros test launch setup.py

# Static types of the whole package (config in pyproject.toml [tool.mypy]).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# One BLAS thread: the small (N,3)@(3,3) products of the geometry were 7-13x slower with
# OpenBLAS threads fighting over a loaded 2-core machine.
test: $(STAMP) lint typecheck
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m sap_ros.demo.demo

bench: $(STAMP)
	$(VENV)/bin/sap_bench geometry --seam-mask ../shared/data/360vot/0117_000211_0.png

# The engine on a CUDA GPU as the robot runs it: SAM2.1 hiera-tiny at 1024 px, 4096x2048 frames,
# bf16, the engine on the device frame path. Prints fps, the stage split, the non-network part
# (NumPy vs device frame path) and the host reads / synchronising CUDA calls of one engine frame;
# writes bench_out/engine_gpu.json. Random weights unless
# SAM2_CHECKPOINT=path/to/sam2.1_hiera_tiny.pt (the timings are the network's either way). The
# CPU-only parts (RSS run, oracle sequence) are kept short so the run fits a GPU lease.
SAM2_CHECKPOINT ?=
BENCH_GPU_JSON ?= bench_out/engine_gpu.json
bench-gpu: $(STAMP)
	@$(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
	  "bench-gpu: no CUDA device: torch " + torch.__version__ + " sees no GPU " \
	  "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA " \
	  "build of torch: make clean; make setup TORCH_SPEC=\"torch==2.13.0 --index-url " \
	  "https://download.pytorch.org/whl/cu128\"")'
	@mkdir -p $(dir $(BENCH_GPU_JSON))
	$(VENV)/bin/sap_bench engine --device cuda --image-size 1024 --model-config sam2.1_hiera_t \
	  --erp-width 4096 --dtype bfloat16 --frames 5 --repeats 2 \
	  --nonnetwork-erp-width 4096 --nonnetwork-image-size 1024 --nonnetwork-repeats 5 \
	  --rss-frames 24 --oracle-frames 5 \
	  $(if $(SAM2_CHECKPOINT),--checkpoint $(SAM2_CHECKPOINT)) --json $(BENCH_GPU_JSON)

clean:
	rm -rf $(VENV) demo_out bench_out
