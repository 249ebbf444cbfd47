#!/usr/bin/env bash
# Build the caer_msgs interfaces with rosidl from the ROS 2 wheels of the venv and install them
# into the venv, so `from caer_msgs.msg import PersonEmotionArray` works with nothing sourced.
#
# Usage: scripts/build_caer_msgs.sh VENV_DIR
#
# The ROS 2 wheels ship CMake export files that name the include dirs of the machine that built
# them (/opt/python/cp311-cp311/...). They are rewritten here to this venv's Python and numpy
# include dirs; the rewrite is idempotent.
set -euo pipefail

venv=$(cd "${1:?usage: $0 VENV_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/caer_msgs"
py="$venv/bin/python"

say() { printf '[build caer_msgs] %s\n' "$*"; }

py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
say "pointing the ROS wheels' CMake exports at $py_inc and $np_inc"
{ grep -rl --include='*Export.cmake' '/opt/python/cp311-cp311' "$venv/share" || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3\.11#$py_inc#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/_core/include#$np_inc#g" "$f"
done
if grep -rq --include='*Export.cmake' '/opt/python/' "$venv/share"; then
  say "error: some CMake export files still name /opt/python/ paths:" >&2
  grep -rl --include='*Export.cmake' '/opt/python/' "$venv/share" >&2
  exit 1
fi

mkdir -p "$build"
export VIRTUAL_ENV="$venv" AMENT_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
say "configuring (build dir $build)"
cmake -S "$root/caer_msgs" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$build.log" 2>&1 \
  || { tail -n 40 "$build.log" >&2; say "error: cmake configure failed, full log in $build.log" >&2; exit 1; }
say "compiling"
cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 \
  || { tail -n 40 "$build.log" >&2; say "error: build failed, full log in $build.log" >&2; exit 1; }
say "installing into $venv"
cmake --install "$build" >>"$build.log" 2>&1 \
  || { tail -n 40 "$build.log" >&2; say "error: install failed, full log in $build.log" >&2; exit 1; }
"$py" -c 'from caer_msgs.msg import PersonEmotion, PersonEmotionArray' \
  || { say "error: caer_msgs was installed but does not import from $py" >&2; exit 1; }
say "done: caer_msgs imports from $py"
