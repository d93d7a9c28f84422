#!/usr/bin/env bash
# Set up seg_perception for development and the demo: a virtual environment in
# .venv (repository root) with every Python package the project needs
# (requirements.txt: PyTorch, ONNX Runtime, OpenCV, rosbags, ROS 2 kilted's
# rclpy and message packages, pytest, colcon) and the package itself, installed
# editable (`pip install -e .`) so that `.venv/bin/seg-perception` and
# `.venv/bin/segmentation_node` run this checkout.
#
# Idempotent: a second run only checks that everything is in place, unless
# requirements.txt, setup.py or setup.cfg changed since the last run.
#
#   bash scripts/setup.sh              # PYTHON=python3.11 bash scripts/setup.sh to pick the interpreter
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.seg_perception_setup"

step() { printf '==> %s\n' "$*"; }
fail() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# -- the interpreter ------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then
    PY=python3.11
else
    PY=python3
fi
command -v "$PY" >/dev/null 2>&1 || fail "$PY not found; install Python 3.11 (Debian 12: apt-get install python3 python3-venv)"
PY_VERSION="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "Python $PY_VERSION is too old; 3.10 or newer is needed (3.11 recommended)"
if [[ "$PY_VERSION" != "3.11" ]]; then
    printf 'setup.sh: warning: Python %s; the ROS 2 kilted wheels on PyPI are built for Python 3.11\n' "$PY_VERSION" >&2
fi

# -- what this setup installs: a fingerprint of the files that define it -----------
fingerprint() {
    cat requirements.txt setup.py setup.cfg package.xml 2>/dev/null | "$PY" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
# an NVIDIA GPU: ONNX Runtime's CUDA and TensorRT build (requirements-gpu.txt) in place of the CPU one
HAS_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    HAS_GPU=1
fi
WANT="$(fingerprint) $(cat requirements-gpu.txt 2>/dev/null | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])') python$PY_VERSION gpu$HAS_GPU"

# every module the code and tests import that is not in the standard library
MODULES="torch torchvision numpy onnx onnxruntime cv2 rosbags tqdm ray matplotlib PIL yaml pytest rclpy \
sensor_msgs std_msgs diagnostic_msgs rcl_interfaces builtin_interfaces ament_index_python colcon_core colcon_ros \
seg_perception"

check_modules() {  # quick: finds the modules without importing them
    "$VENV/bin/python" - "$REPO" $MODULES <<'PY'
import importlib.util, sys
from pathlib import Path
repo, names = Path(sys.argv[1]), sys.argv[2:]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != repo]  # seg_perception must come from the install
missing = [n for n in names if importlib.util.find_spec(n) is None]
if missing:
    print("missing: " + " ".join(missing))
    sys.exit(1)
PY
}

check_scripts() {
    [[ -x "$VENV/bin/seg-perception" && -x "$VENV/bin/segmentation_node" ]]
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
        && check_modules >/dev/null && check_scripts; then
    step "setup is up to date ($VENV)"
    exit 0
fi

# -- the virtual environment --------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    step "creating the virtual environment $VENV (Python $PY_VERSION)"
    "$PY" -m venv "$VENV" || fail "could not create $VENV; on Debian/Ubuntu: apt-get install python3-venv"
else
    step "using the virtual environment $VENV"
fi
VPY="$VENV/bin/python"

step "upgrading pip"
"$VPY" -m pip install --upgrade pip

step "installing the requirements (requirements.txt; PyTorch is large: the first run takes a few minutes)"
if [[ "$HAS_GPU" == 1 ]]; then
    # both builds install the module `onnxruntime`: only the GPU one, never the two over each other
    grep -v -E '^onnxruntime([^-_a-z]|$)' requirements.txt > "$VENV/requirements-cpu-less.txt"
    "$VPY" -m pip install -r "$VENV/requirements-cpu-less.txt"
    if "$VPY" -m pip show onnxruntime >/dev/null 2>&1; then
        "$VPY" -m pip uninstall -y onnxruntime
    fi
    step "an NVIDIA GPU is present: installing ONNX Runtime with CUDA and TensorRT (requirements-gpu.txt)"
    "$VPY" -m pip install --force-reinstall --no-deps -r requirements-gpu.txt
    "$VPY" -m pip install -r requirements-gpu.txt
else
    "$VPY" -m pip install -r requirements.txt
fi

step "installing seg_perception from this checkout (pip install -e .)"
"$VPY" -m pip install -e .

# A pip that falls back to `setup.py develop` honours setup.cfg's script_dir (meant for colcon)
# and puts the commands in .venv/lib/seg_perception: link them into .venv/bin then.
for exe in seg-perception segmentation_node; do
    if [[ ! -x "$VENV/bin/$exe" && -x "$VENV/lib/seg_perception/$exe" ]]; then
        ln -sf "../lib/seg_perception/$exe" "$VENV/bin/$exe"
    fi
done

step "checking the installation"
check_scripts || fail "the commands seg-perception and segmentation_node are not in $VENV/bin"
check_modules || fail "some modules are not importable in $VENV (see above)"
"$VPY" -c 'import rclpy, sensor_msgs.msg, torch, onnxruntime, cv2; print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, rclpy ok")'
"$VENV/bin/seg-perception" --help >/dev/null

echo "$WANT" > "$STAMP"
step "done: $VENV/bin/seg-perception, $VENV/bin/segmentation_node"
