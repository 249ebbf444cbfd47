#!/bin/sh
# Stop early, naming every missing tool, before make setup creates anything.
# Usage: scripts/check_tools.sh PYTHON
py=${1:-python3}
missing=""
add() { missing="${missing:+$missing, }$1"; }
command -v "$py" >/dev/null 2>&1 || add "$py (Python 3.10+ with venv)"
command -v cmake >/dev/null 2>&1 || add "cmake (builds caer_msgs)"
{ command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } \
  || add "cc/gcc (C compiler for caer_msgs)"
{ command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1; } \
  || add "c++/g++ (C++ compiler for caer_msgs)"
if [ -n "$missing" ]; then
  echo "make setup: missing tools: $missing" >&2
  echo "make setup: install them (Debian/Ubuntu: apt install python3-venv cmake build-essential) and run make setup again" >&2
  exit 1
fi
if ! "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "make setup: $py must be Python 3.10 or newer with the venv module ($("$py" --version 2>&1))" >&2
  exit 1
fi
