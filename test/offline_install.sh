#!/usr/bin/env bash
# Offline install of the GPU benchmark on top of a "system" torch, as on a robot or lab GPU box
# (README "Offline robot / GPU box"):
#
#   1. fill a wheelhouse here with `make wheelhouse-bench` (network: the configured indexes);
#   2. make a base Python install whose site-packages holds torch and its requirements only,
#      linked from the environment of $TORCH_PYTHON (the box's preinstalled torch);
#   3. with the network blocked for pip (no pip configuration, proxies pointing at a closed port)
#      `make setup-bench PYTHON=<base> TORCH=system WHEELHOUSE=<wheelhouse>`: a venv with system
#      site packages that takes torch from the base and everything else from the wheelhouse;
#      `make bench-gpu` then has nothing left to install;
#   4. still offline: `sap_bench engine --help` and a 2-frame engine run (SAM2 at 64 px), and
#      checks that torch comes from the base, sam2 from the wheel without its CUDA extension,
#      and that no Ray, ROS or rosbags was installed.
#
# usage: test/offline_install.sh WORKDIR    (an empty folder; everything goes there)
# env:   TORCH_PYTHON  a python that imports torch (default: python3)
#        WHEELHOUSE    an already filled wheelhouse (step 1 is skipped)
# exit:  0 all worked; 75 the wheelhouse could not be filled because no package index is
#        reachable (a skip, said on the last line); anything else a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:?usage: $0 WORKDIR}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TORCH_PYTHON=${TORCH_PYTHON:-python3}
unset MAKEFLAGS MFLAGS MAKELEVEL  # a make of our own, not the caller's variables
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
say() { echo "[offline] $*"; }
now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# 1. the wheelhouse, filled with the network --------------------------------------------------
t0=$(now)
if [ -n "${WHEELHOUSE:-}" ]; then
  WH=$(cd "$WHEELHOUSE" && pwd)
  say "wheelhouse given: $WH"
else
  WH=$WORK/wheelhouse
  if ! make -C "$REPO" --no-print-directory wheelhouse-bench WHEELHOUSE="$WH" \
      > "$WORK/wheelhouse.log" 2>&1; then
    # A failure with an index in reach is a bug of the target; without one, a skip.
    if python3 -m pip download -q --no-deps --only-binary=:all: -d "$WORK/probe" hydra-core \
        > "$WORK/probe.log" 2>&1; then
      tail -n 30 "$WORK/wheelhouse.log"
      say "make wheelhouse-bench failed although a package index is reachable"
      exit 1
    fi
    say "SKIP: no package index reachable to fill the wheelhouse ($(tail -n 1 "$WORK/probe.log"))"
    exit 75
  fi
  say "wheelhouse filled in $(took "$t0") s: $(ls "$WH" | wc -l) wheels, $(du -sh "$WH" | cut -f1)"
fi

# 2. a base Python install holding torch (and what torch requires) only -----------------------
t0=$(now)
BASE=$WORK/base
"$TORCH_PYTHON" - "$BASE" <<'EOF'
"""Link a copy of this interpreter's base install, with only torch's distributions installed."""
import importlib.metadata as md
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import sysconfig

base = Path(sys.argv[1])
stdlib = Path(sysconfig.get_paths()['stdlib'])
exe = Path(os.path.realpath(sys._base_executable))
(base / 'bin').mkdir(parents=True)
shutil.copy2(exe, base / 'bin' / 'python3')  # a copy: Python finds its prefix from the file
lib = base / 'lib' / stdlib.name
lib.mkdir(parents=True)
for entry in stdlib.iterdir():
    if entry.name not in ('site-packages', 'dist-packages'):
        (lib / entry.name).symlink_to(entry)
site = Path(subprocess.check_output(
    [str(base / 'bin' / 'python3'), '-c', 'import site; print(site.getsitepackages()[0])'],
    text=True).strip())
if not site.is_relative_to(base):
    sys.exit(f'the base install at {base} looks for packages in {site}')
site.mkdir(parents=True, exist_ok=True)

try:
    from packaging.requirements import Requirement
except ImportError:  # without packaging every unconditional requirement is taken
    Requirement = None
todo, seen = ['torch'], set()
while todo:
    name = re.sub(r'[-_.]+', '-', todo.pop()).lower()
    if name in seen:
        continue
    seen.add(name)
    dist = md.distribution(name)
    for req in dist.requires or []:
        if Requirement is not None:
            parsed = Requirement(req)
            if parsed.marker is None or parsed.marker.evaluate({'extra': ''}):
                todo.append(parsed.name)
        elif ';' not in req:
            todo.append(re.split(r'[ <>=!~\[(]', req, maxsplit=1)[0])
    tops = {Path(str(f)).parts[0] for f in dist.files or []}
    for top in sorted(tops - {'..', '__pycache__'}):
        source = Path(str(dist.locate_file(top)))
        if source.exists() and not (site / top).exists():
            (site / top).symlink_to(source)
print(f'[offline] base {base}: torch and {len(seen) - 1} requirements ({", ".join(sorted(seen))})')
EOF
say "base install in $(took "$t0") s"

# 3. offline: the benchmark's venv from the base's torch and the wheelhouse --------------------
offline() {
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
    -u PIP_NO_INDEX -u no_proxy -u NO_PROXY \
    PIP_CONFIG_FILE=/dev/null PIP_RETRIES=0 PIP_DEFAULT_TIMEOUT=5 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
    HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 \
    PIP_CACHE_DIR="$WORK/pip-cache" "$@"
}
t0=$(now)
VENV=$WORK/venv
if ! offline make -C "$REPO" --no-print-directory setup-bench PYTHON="$BASE/bin/python3" \
    VENV="$VENV" TORCH=system WHEELHOUSE="$WH" > "$WORK/setup.log" 2>&1; then
  tail -n 40 "$WORK/setup.log"
  say "FAILED: make setup-bench offline from the wheelhouse (log: $WORK/setup.log)"
  exit 1
fi
cat "$WORK/setup.log"
say "offline make setup-bench in $(took "$t0") s"
# make bench-gpu sets up what setup-bench does (no full setup with Ray and ROS) and nothing more.
bench_gpu() {
  offline make -C "$REPO" --no-print-directory -n bench-gpu PYTHON="$BASE/bin/python3" \
    VENV="$1" TORCH=system WHEELHOUSE="$WH"
}
fresh=$(bench_gpu "$WORK/no-venv-yet")
if ! grep -q 'pip install .*hydra-core' <<< "$fresh" || grep -qE '(^| )ray( |;|$)|ros-jazzy' <<< "$fresh"; then
  echo "$fresh" | cut -c1-300
  say "FAILED: make bench-gpu on a fresh box would not set up (only) what the benchmark imports"
  exit 1
fi
todo=$(bench_gpu "$VENV")
if grep -q 'pip install' <<< "$todo" || ! grep -q 'sap_bench engine --device cuda' <<< "$todo"; then
  echo "$todo" | cut -c1-300
  say "FAILED: make bench-gpu would set up more than make setup-bench did"
  exit 1
fi
say "make bench-gpu sets up the benchmark's packages only; nothing left after setup-bench"

# 4. offline: the benchmark runs --------------------------------------------------------------
offline "$VENV/bin/python" - "$BASE" "$VENV" <<'EOF'
"""Check where the venv's packages come from."""
import importlib
import importlib.util
from pathlib import Path
import sys

base, venv = sys.argv[1], sys.argv[2]


def origin(name: str) -> str:
    return str(Path(importlib.import_module(name).__file__).parent)


if not origin('torch').startswith(base + '/'):
    sys.exit(f'torch comes from {origin("torch")}, not from the base install {base}')
# Everything else the benchmark imports comes from the wheelhouse, installed into the venv.
for name in ('sam2', 'numpy', 'cv2', 'scipy', 'hydra', 'omegaconf', 'iopath', 'PIL', 'yaml',
             'tqdm'):
    if not origin(name).startswith(venv + '/'):
        sys.exit(f'{name} comes from {origin(name)}, not from the venv {venv}')
if importlib.util.find_spec('sam2._C') is not None:
    sys.exit('sam2 has a compiled _C extension: it was not built with SAM2_BUILD_CUDA=0')
extra = [m for m in ('ray', 'rclpy', 'rosbags', 'matplotlib', 'pooch', 'pytest')
         if importlib.util.find_spec(m) is not None]
if extra:
    sys.exit(f'setup-bench installed what the benchmark does not import: {extra}')
print(f'[offline] torch from {origin("torch")}; sam2, numpy, cv2, scipy, hydra, ... from '
      f'{venv}; no ray, rclpy, rosbags, matplotlib, pooch, pytest')
EOF
t0=$(now)
offline "$VENV/bin/sap_bench" engine --help > "$WORK/help.txt"
say "sap_bench engine --help: $(wc -l < "$WORK/help.txt") lines"
offline "$VENV/bin/sap_bench" engine --device cpu --frames 1 --image-size 64 --erp-width 256 \
  --repeats 1 --culling-objects 1 --culling-frames 1 --culling-image-size 64 \
  --oracle-frames 2 --oracle-erp-width 256 --oracle-patch-size 64 --rss-frames 2 \
  --rss-erp-width 256 --nonnetwork-erp-width 256 --nonnetwork-image-size 64 \
  --nonnetwork-objects 1 --nonnetwork-repeats 1 --schedule-frames 2 --schedule-erp-width 256 \
  --schedule-patch-size 64 --quiet --json "$WORK/engine.json"
say "2-frame sap_bench engine run in $(took "$t0") s: $WORK/engine.json"
