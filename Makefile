# Every target creates the virtual environment when it is missing (pinned versions,
# CPU torch first so nothing pulls CUDA), so a fresh machine needs only python3.11.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   ?= runs/demo

.PHONY: demo test test-all env clean-demo

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The tests CI runs (fast, offline; slow ones are covered by faster tests of the same code).
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The whole job on the embedded default: synthetic corpus -> shards -> train -> BVH + MP4.
demo: $(VENV)/.installed
	bash launch/demo.sh $(DEMO)

clean-demo:
	rm -rf $(DEMO)
