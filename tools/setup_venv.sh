#!/usr/bin/env bash
# Creates .venv/ with every pinned dependency and the generated ROS interfaces.
# Idempotent: a stamp records the inputs; a second run with unchanged inputs returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}

inputs_hash() {
  cat requirements.lock tools/setup_venv.sh setup.py CMakeLists.txt package.xml \
      msg/*.msg srv/*.srv tools/tf2_msgs_standin/*.* tools/tf2_msgs_standin/msg/* | sha256sum | cut -d' ' -f1
}
STAMP=$VENV/.rayemb-setup
if [[ -f $STAMP && "$(cat "$STAMP")" == "$(inputs_hash)" ]]; then
  exit 0
fi

echo "[setup] creating $VENV (takes about two minutes on a cold cache)"
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q -r requirements.lock
# diffdrr declares torchvision/timm/pyvista... which it does not need for what we use, and
# torchvision would drag in a CUDA torch: install it alone.
"$VENV/bin/python" -m pip install -q --no-deps diffdrr==0.6.1
# The checkout itself, editable (the `rayemb` command and `import rayemb_ros`).
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . \
  --config-settings editable_mode=compat

# The ROS wheels' exported CMake files name the wheel builder's Python; point them here.
PYINC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rlZ /opt/python/cp311-cp311 "$VENV/share" --include='*.cmake' || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g"

build_interfaces() {  # $1 = source dir, $2 = build dir, extra cmake args after
  local src=$1 build=$2; shift 2
  rm -rf "$build"; mkdir -p "$build"
  AMENT_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH cmake -S "$src" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF "$@" >"$build/build.log" 2>&1 \
  && AMENT_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH cmake --build "$build" --target install >>"$build/build.log" 2>&1 \
  || { echo "[setup] interface build failed, see $build/build.log"; tail -30 "$build/build.log"; exit 1; }
}
echo "[setup] building interfaces"
if ! "$VENV/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null; then
  # Only where the real tf2_msgs is absent (the PyPI wheels have none): same definition,
  # same type hash, so real tf2 and RViz accept what we publish.
  build_interfaces tools/tf2_msgs_standin "$VENV/build/tf2_msgs"
fi
build_interfaces . "$VENV/build/rayemb_ros" -DRAYEMB_INSTALL_PYTHON_SOURCES=OFF
# The generated half lives in site-packages/rayemb_ros without an __init__.py, so the
# checkout's package (which extends its __path__) is the one imported.
rm -f "$VENV"/lib/python3*/site-packages/rayemb_ros/__init__.py

inputs_hash >"$STAMP"
echo "[setup] done: $VENV"
