# caer_ros: one-command setup and tests. `make setup` is idempotent: each step runs again only
# when its inputs changed (stamp files inside the venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS := --disable-pip-version-check --progress-bar off -c requirements/constraints.txt
# DDS traffic of tests and demos stays on this machine (see DESIGN.md).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

MSG_FILES := $(wildcard caer_msgs/msg/*.msg) caer_msgs/CMakeLists.txt caer_msgs/package.xml
REQ_FILES := $(wildcard requirements/*.txt)

.PHONY: setup test lint pytest demo clean help

help:
	@echo "make setup   create $(VENV), install pinned dependencies, build caer_msgs, install caer_ros"
	@echo "make test    setup, lint (ruff), then the whole pytest suite"
	@echo "make lint    ruff check"
	@echo "make demo    setup, then the whole product end to end (scripts/demo.py): train a small"
	@echo "             model on synthetic scenes, run emotion_node on a replayed camera stream;"
	@echo "             pictures and summary.json in $(DEMO_OUT)/ (DEMO_FAST=1: a short run)"
	@echo "make clean   remove build/ (keeps $(VENV))"

setup: $(VENV)/.stamp-caer_ros
	@echo "[setup] ready: $(PY)"

$(VENV)/.stamp-tools: scripts/check_tools.sh
	@echo "[setup] checking tools"
	@scripts/check_tools.sh $(PYTHON)
	@mkdir -p $(VENV) && touch $@

$(PY): | $(VENV)/.stamp-tools
	@echo "[setup] creating virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-deps: $(REQ_FILES) $(VENV)/.stamp-tools | $(PY)
	@echo "[setup] installing pinned dependencies (torch CPU, ROS 2 wheels, onnxruntime, ...)"
	$(PIP) install $(PIP_FLAGS) -r requirements/runtime.txt -r requirements/ros.txt -r requirements/dev.txt
	@touch $@

$(VENV)/.stamp-msgs: $(MSG_FILES) scripts/build_caer_msgs.sh $(VENV)/.stamp-deps
	@echo "[setup] building caer_msgs with rosidl"
	scripts/build_caer_msgs.sh $(VENV)
	@touch $@

# --use-pep517: an editable wheel, whatever pip the venv came with (an old pip's legacy
# `setup.py develop` trips over setup.cfg's [develop] section, which is colcon's).
$(VENV)/.stamp-caer_ros: setup.py setup.cfg package.xml $(VENV)/.stamp-msgs
	@echo "[setup] installing caer_ros (editable)"
	$(PIP) install $(PIP_FLAGS) --no-deps --no-build-isolation --use-pep517 -e .
	@touch $@

lint: setup
	@echo "[lint] ruff check"
	$(VENV)/bin/ruff check .

pytest: setup
	@echo "[test] pytest"
	$(PY) -m pytest

test: lint pytest

# make demo DEMO_FAST=1: every step, a few frames and seconds of training (CI's variant).
# DEMO_OUT: output folder; DEMO_ARGS: more scripts/demo.py options (--retrain, --rate 2, ...).
DEMO_OUT ?= outputs/demo
DEMO_FAST ?=
DEMO_ARGS ?=
demo: setup
	$(PY) scripts/demo.py --out $(DEMO_OUT) $(if $(filter-out 0 no false,$(DEMO_FAST)),--fast) $(DEMO_ARGS)

clean:
	rm -rf build
