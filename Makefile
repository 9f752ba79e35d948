# sap_ros: `make demo` (the main job) and `make test` on a fresh machine; both set up .venv first.
# Offline robot / GPU box (README): `make wheelhouse` on a networked machine, then
# `make setup WHEELHOUSE=dir TORCH=system` or `make bench-gpu WHEELHOUSE=dir` on the box.
SHELL := /bin/bash
, := ,
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch of the venv: auto reuses a CUDA build of torch that $(PYTHON) already imports (venv with
# system site packages; when $(PYTHON) is itself a venv, its site packages through a .pth file)
# and otherwise installs TORCH_SPEC; system reuses any importable torch (>= 2.5.1, sam2's floor)
# or stops; pinned always installs TORCH_SPEC into the venv.
TORCH ?= auto
# CPU build by default; on a CUDA machine e.g. TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH_SPEC ?= torch==2.13.0
# A folder of wheels (`make wheelhouse`): every pip install then reads only that folder.
WHEELHOUSE ?=
PIP_FROM := $(if $(WHEELHOUSE),--no-index --find-links $(abspath $(WHEELHOUSE)))
ROS_WHEELS := 'ros-jazzy-rclpy[fastrtps]' ros-jazzy-rmw-fastrtps-cpp ros-jazzy-sensor-msgs \
	ros-jazzy-std-msgs ros-jazzy-geometry-msgs ros-jazzy-visualization-msgs \
	ros-jazzy-diagnostic-msgs ros-jazzy-std-srvs ros-jazzy-lifecycle-msgs
# What `sap_bench engine` imports besides torch and sam2 (scipy: the oracle's J through
# sap_ros.eval.metrics); no Ray, no ROS, no rosbags.
BENCH_DEPS := numpy opencv-python-headless pyyaml tqdm hydra-core iopath pillow scipy
# tensordict, tensorboard and Ray Train: sap_train (sam2's training package, from sam2's sdist).
PY_DEPS := $(BENCH_DEPS) pooch rosbags py360convert matplotlib 'ray[train]' tensordict tensorboard
DEV_DEPS := pytest pytest-timeout ruff mypy
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
.PHONY: setup setup-bench wheelhouse wheelhouse-bench test lint typecheck demo bench bench-gpu train-gpu clean
setup: $(STAMP)
setup-bench: $(BENCH_STAMP)

# Prints "<kind> <version>" of the torch $(PYTHON) imports: kind cuda (a CUDA or ROCm build, a GPU
# need not be visible while installing), cpu, or with "-old" when older than sam2's 2.5.1.
TORCH_PROBE := import torch as t; old = t.torch_version.TorchVersion(t.__version__) < "2.5.1"; \
	print(("cuda" if (t.version.cuda or t.version.hip) else "cpu") + ("-old" if old else ""), \
	t.__version__)

# Exits 0 in a venv (system site packages would then be those of its base interpreter, not its
# own); the site-packages folders of an interpreter; the one pip installs into.
IS_VENV := import sys; sys.exit(sys.prefix == sys.base_prefix)
SITE_DIRS := import site; print("\n".join(site.getsitepackages()))
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])

# $(call make_venv,PACKAGES,ROS,IMPORTS): the venv with torch (see TORCH), PACKAGES, sam2 built
# without its CUDA extension (SAM2_BUILD_CUDA=0) and without its declared dependencies (a CUDA
# torch and torchvision, which the video path does not need), and sap_ros itself (editable).
# ROS=1: rclpy from a sourced ROS install (ROS_DISTRO set, rclpy importable) is reused through
# system site packages, otherwise the ros-jazzy-* wheels are installed into the venv.
define make_venv
	@set -e; \
	probe=$$($(PYTHON) -c '$(TORCH_PROBE)' 2>/dev/null) || probe='none -'; \
	read -r torch_kind torch_version <<< "$$probe"; \
	case '$(TORCH)' in \
	  pinned) sys_torch=0 ;; \
	  system) case "$$torch_kind" in \
	      none) echo '[setup] TORCH=system: $(PYTHON) imports no torch; PYTHON=... names the' \
	        'interpreter that has it, TORCH=pinned installs $(TORCH_SPEC)' >&2; exit 1 ;; \
	      *-old) echo "[setup] TORCH=system: the torch of $(PYTHON) is $$torch_version, older" \
	        "than sam2's floor 2.5.1; TORCH=pinned installs $(TORCH_SPEC)" >&2; exit 1 ;; \
	    esac; sys_torch=1 ;; \
	  auto) if [ "$$torch_kind" = cuda ]; then sys_torch=1; else sys_torch=0; fi ;; \
	  *) echo "[setup] TORCH must be auto, system or pinned, got '$(TORCH)'" >&2; exit 1 ;; \
	esac; \
	site=$$sys_torch; ros=0; \
	$(if $(filter 1,$(2)),if $(PYTHON) -c 'import rclpy' >/dev/null 2>&1; then \
	  echo '[setup] rclpy found in the system ROS install: venv with system site packages'; \
	  site=1; \
	else \
	  echo '[setup] no system rclpy: installing the ros-jazzy-* wheels'; ros=1; \
	fi;) \
	if [ $$sys_torch = 1 ]; then \
	  echo "[setup] reusing torch $$torch_version ($$torch_kind build) of $(PYTHON):" \
	    'venv with system site packages (TORCH=pinned installs $(TORCH_SPEC) instead)'; \
	elif [ "$$torch_kind" != none ] && [ '$(TORCH)' = auto ]; then \
	  echo "[setup] $(PYTHON) has torch $$torch_version ($$torch_kind build), not reused:" \
	    'installing $(TORCH_SPEC) (TORCH=system reuses it)'; \
	fi; \
	if [ -n '$(WHEELHOUSE)' ]; then echo '[setup] installing from the wheelhouse $(WHEELHOUSE) only'; fi; \
	if [ $$site = 1 ]; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi; \
	if [ $$sys_torch = 1 ] && $(PYTHON) -c '$(IS_VENV)'; then \
	  echo '[setup] $(PYTHON) is a venv: its site packages are added to $(VENV) by a .pth file'; \
	  $(PYTHON) -c '$(SITE_DIRS)' > "$$($(PY) -c '$(PURELIB)')/_reused_torch_env.pth"; \
	fi; \
	if [ $$sys_torch = 1 ] && ! $(PY) -c 'import torch' >/dev/null 2>&1; then \
	  echo '[setup] $(VENV) does not see the torch of $(PYTHON); TORCH=pinned installs' \
	    '$(TORCH_SPEC) instead' >&2; exit 1; \
	fi; \
	$(PIP) install -q $(PIP_FROM) --upgrade pip setuptools wheel; \
	if [ $$sys_torch = 0 ]; then \
	  if [ $$site = 1 ]; then ignore=--ignore-installed; else ignore=; fi; \
	  $(PIP) install -q $(PIP_FROM) $$ignore $(TORCH_SPEC); \
	fi; \
	$(PIP) install -q $(PIP_FROM) $(1); \
	$(if $(filter 1,$(2)),if [ $$ros = 1 ]; then $(PIP) install -q $(PIP_FROM) $(ROS_WHEELS); fi;) \
	SAM2_BUILD_CUDA=0 $(PIP) install -q $(PIP_FROM) --no-deps --no-build-isolation sam2==1.1.0; \
	$(PIP) install -q $(PIP_FROM) --no-deps --no-build-isolation -e .; \
	$(PY) -c 'import torch, sam2, $(3); print("[setup] torch", torch.__version__, "from", \
	  torch.__file__.rsplit("/", 2)[0])'
endef

# colcon (Debian packages) for test/test_packaging.py's `colcon build` check: installed only when
# missing and only as root (CI) and not from a wheelhouse (offline); otherwise that check skips
# and says why.
$(STAMP): setup.py Makefile
	@if ! command -v colcon >/dev/null 2>&1; then \
	  if [ -z '$(WHEELHOUSE)' ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo '[setup] installing colcon and python3-colcon-ros (apt) for the packaging check'; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq colcon \
	      python3-colcon-ros >/dev/null) || echo '[setup] WARNING: apt could not install colcon'; \
	  else \
	    echo '[setup] colcon missing: the colcon build check will skip;' \
	      'sudo apt-get install colcon python3-colcon-ros'; \
	  fi; \
	fi
	$(call make_venv,$(PY_DEPS) $(DEV_DEPS),1,rclpy$(,) cv2$(,) rosbags$(,) pooch$(,) training.model.sam2$(,) ray.train.torch)
	touch $@ $(BENCH_STAMP)

# Only what `sap_bench engine` imports (make bench-gpu): torch, sam2, BENCH_DEPS, sap_ros.
$(BENCH_STAMP): setup.py Makefile
	$(call make_venv,$(BENCH_DEPS),0,cv2$(,) scipy$(,) hydra)
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
# oracle sequence is kept short so the run fits a GPU lease; the long run (RSS, CUDA peak
# memory) is 300 frames. Then discovery's cost per searched patch at 1024 px (discovery_cost) and
# what a 20-class head adds to a frame (class_cost). Sets up
# only what the benchmark imports (setup-bench: no Ray, no ROS), so it also runs offline from a
# wheelhouse: make bench-gpu WHEELHOUSE=dir.
SAM2_CHECKPOINT ?=
BENCH_GPU_JSON ?= bench_out/engine_gpu.json
bench-gpu: $(BENCH_STAMP)
	@$(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
	  "bench-gpu: no CUDA device: torch " + torch.__version__ + " sees no GPU " \
	  "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA " \
	  "build of torch: make clean; make bench-gpu (reuses a CUDA torch of $(PYTHON)), or " \
	  "make bench-gpu TORCH=pinned TORCH_SPEC=\"torch==2.13.0 --index-url " \
	  "https://download.pytorch.org/whl/cu128\"")'
	@mkdir -p $(dir $(BENCH_GPU_JSON))
	$(VENV)/bin/sap_bench engine --device cuda --image-size 1024 --model-config sam2.1_hiera_t \
	  --erp-width 4096 --dtype bfloat16 --frames 5 --repeats 2 \
	  --nonnetwork-erp-width 4096 --nonnetwork-image-size 1024 --nonnetwork-repeats 5 \
	  --rss-frames 300 --oracle-frames 5 \
	  $(if $(SAM2_CHECKPOINT),--checkpoint $(SAM2_CHECKPOINT)) --json $(BENCH_GPU_JSON)
	$(PY) -m sap_ros.bench.discovery_cost --device cuda --dtype bfloat16 --image-size 1024 \
	  --patches 4
	$(PY) -m sap_ros.bench.class_cost --device cuda --image-size 1024 --model-config sam2.1_hiera_t \
	  --erp-width 4096 --frames 4 --set engine.frame_path=torch \
	  $(if $(SAM2_CHECKPOINT),--checkpoint $(SAM2_CHECKPOINT))

# A short training benchmark on a CUDA GPU (sap_train bench): SAM2.1 hiera-tiny at 1024 px, SAP's
# freezing, 8-patch videos, 4 per step; steps/s and peak CUDA memory into bench_out/train_gpu.json.
TRAIN_GPU_JSON ?= bench_out/train_gpu.json
train-gpu: $(STAMP)
	@mkdir -p $(dir $(TRAIN_GPU_JSON))
	$(VENV)/bin/sap_train bench --device cuda --model-config sam2.1_hiera_t --image-size 1024 \
	  --steps 30 --warmup 5 --batch-size 4 --num-frames 8 --json $(TRAIN_GPU_JSON)

# Fill a wheelhouse on a networked machine for an offline one (README "Offline robot / GPU box"):
#   make wheelhouse WHEELHOUSE=dir                 # everything `make setup` installs but torch
#   make wheelhouse-bench WHEELHOUSE=dir           # only what `make bench-gpu` installs
#   ... PYTHON_VERSION=3.10 PLATFORM=manylinux_2_35_aarch64   # for another Python / machine
#   ... TORCH=pinned [TORCH_SPEC=...]              # with the pinned torch (none on the box)
# Only wheels, never sdists, so the box builds nothing: the packages that a dry-run install here
# would take as sdists (pure Python: iopath, hydra-core's antlr4-python3-runtime, the ROS
# wheels' empy) are built into wheels here, and sam2 too, without its CUDA extension
# (SAM2_BUILD_CUDA=0: a py3-none-any wheel, no torch needed to build it). Building happens in a
# throwaway venv of $(PYTHON).
PYTHON_VERSION ?=
PLATFORM ?=
# pip download's target options; PLATFORM=manylinux_2_Y_ARCH means a box with glibc 2.Y, which
# also takes manylinux_2_X wheels for X < Y (pip itself takes the tag literally).
TARGET_ARGS := import re, sys; v, ps = sys.argv[1], sys.argv[2:]; \
	ms = [re.fullmatch(r"manylinux_2_(\d+)_(\w+)", p) for p in ps]; \
	tags = [t for p, m in zip(ps, ms) for t in ([p] if m is None else \
	[f"manylinux_2_{k}_{m[2]}" for k in range(int(m[1]), 4, -1)] + \
	[f"manylinux{a}_{m[2]}" for a in ("2014", "2010", "1")])]; \
	print(" ".join((["--python-version", v] if v else []) + [a for t in tags for a in ("--platform", t)]))
# The distributions that a dry-run install (report.json) would take as sdists, as name==version.
SDISTS_OF_REPORT := import json, sys; report = json.load(open(sys.argv[1])); \
	print(" ".join(i["metadata"]["name"] + "==" + i["metadata"]["version"] \
	for i in report["install"] if not i["download_info"]["url"].endswith(".whl")))
wheelhouse:
	$(call fill_wheelhouse,$(PY_DEPS) $(DEV_DEPS) $(ROS_WHEELS))
wheelhouse-bench:
	$(call fill_wheelhouse,$(BENCH_DEPS))

define fill_wheelhouse
	@set -e; \
	if [ -z '$(WHEELHOUSE)' ]; then echo 'make $@: set WHEELHOUSE=dir (the folder to fill)' >&2; \
	  exit 1; fi; \
	mkdir -p '$(WHEELHOUSE)'; wh=$$(cd '$(WHEELHOUSE)' && pwd); \
	build=$$(mktemp -d); trap 'rm -rf "$$build"' EXIT; \
	$(PYTHON) -m venv "$$build/venv"; bpip="$$build/venv/bin/python -m pip"; \
	$$bpip install -q --upgrade pip setuptools wheel; \
	$$bpip install -q --dry-run --ignore-installed --report "$$build/report.json" $(1); \
	sdists=$$("$$build/venv/bin/python" -c '$(SDISTS_OF_REPORT)' "$$build/report.json"); \
	echo "[wheelhouse] wheels built here: $$sdists sam2==1.1.0 (without its CUDA extension)"; \
	if [ -n "$$sdists" ]; then \
	  $$bpip wheel -q --no-deps -w "$$build/built" $$sdists; \
	  for w in "$$build"/built/*.whl; do case "$$w" in \
	    *-none-any.whl) cp "$$w" "$$wh"/ ;; \
	    *) echo "[wheelhouse] $${w##*/} is not pure Python: the box would have to build it" >&2 ;; \
	  esac; done; \
	fi; \
	SAM2_BUILD_CUDA=0 $$bpip wheel -q --no-deps --no-build-isolation -w "$$wh" sam2==1.1.0; \
	echo "[wheelhouse] wheels of $(or $(PLATFORM),this machine), Python $(or $(PYTHON_VERSION),of $(PYTHON))"; \
	target=--only-binary=:all:; \
	if [ -n '$(PYTHON_VERSION)$(PLATFORM)' ]; then \
	  target="$$target --implementation cp $$($(PYTHON) -c '$(TARGET_ARGS)' '$(PYTHON_VERSION)' $(PLATFORM))"; \
	fi; \
	$$bpip download -q -d "$$wh" --find-links "$$wh" $$target pip setuptools wheel $(1); \
	if [ '$(TORCH)' = pinned ]; then $$bpip download -q -d "$$wh" $$target $(TORCH_SPEC); fi; \
	echo "[wheelhouse] $$wh: $$(ls "$$wh" | wc -l) wheels, $$(du -sh "$$wh" | cut -f1)"
endef

clean:
	rm -rf $(VENV) demo_out bench_out
