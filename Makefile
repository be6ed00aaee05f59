# Two entry points (see README): `make demo` runs the main job, `make test` runs the whole test suite.
# Both create or refresh the pinned virtual environment in .venv first: the main job only its run-time part
# (requirements/demo.txt), the tests all of requirements/ci.txt.
PYTHON ?= python3
VENV := .venv
REQ := requirements/ci.txt
DEMO_REQ := requirements/demo.txt
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# --no-compile: pip would byte-compile every file of every package (torch alone has thousands); Python compiles
# what is imported on first use instead. Measured in BENCHMARKS.md ("Main job from a clean clone").
PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile
# pip installs torch and uv (requirements/bootstrap.txt says why torch goes through pip); uv installs the rest, the
# same pinned set as pip would (compared with pip freeze), fetching and unpacking in parallel: the whole ci.txt
# environment in 29 s instead of 56 s with pip alone, both without a cache (BENCHMARKS.md, "Test suite"). uv keeps
# the torch already installed (2.13.0+cpu satisfies ==2.13.0) and, like pip --no-compile, writes no bytecode.
# Where uv cannot reach the index (a network that only pip is configured for), pip installs the rest instead.
UV := $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python
BOOT_REQ := requirements/bootstrap.txt
# Real CT is read through the sample-data registry; this machine has a local mirror beside the checkout.
export VOCOCORE_SAMPLE_DATA_MIRROR ?= $(abspath ../shared/data/ct)
export VOCOCORE_CACHE ?= $(abspath .cache)
# Python keeps the bytecode of what it imports (in .venv and the tree's __pycache__, which git ignores), so later
# processes read it instead of compiling again. Some environments set PYTHONDONTWRITEBYTECODE: with it and pip's
# --no-compile nothing was ever kept, and every process paid the compile again (`import torch, monai.networks.nets,
# monai.transforms`: 17.5-18.0 s without bytecode, 6.6-7.3 s with it, on the 2-core CI-sized VM).
unexport PYTHONDONTWRITEBYTECODE
# OpenMP threads sleep instead of spinning while they wait: on a busy or small CPU, spinning torch threads can make
# small networks tens of times slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv demo-venv demo studio test clean

venv: $(STAMP)
demo-venv: $(DEMO_STAMP)

$(DEMO_STAMP): $(BOOT_REQ) $(DEMO_REQ) VoCoCore/pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r $(BOOT_REQ)
	$(UV) -r $(DEMO_REQ) || $(PIP) -r $(DEMO_REQ)
	$(UV) --no-deps -e VoCoCore || $(PIP) --no-deps -e VoCoCore
	touch $(DEMO_STAMP)

$(STAMP): $(REQ) $(DEMO_STAMP)
	$(UV) -r $(REQ) || $(PIP) -r $(REQ)
	touch $(STAMP)

# The main job: VoCo end to end on the bundled real CT; see output/demo/report.md. Its time from a clean clone on
# 2 cores is measured by benchmarks/demo_clean_clone.sh and recorded in BENCHMARKS.md ("Main job from a clean clone").
demo: $(DEMO_STAMP)
	PYTHONPATH=VoCoCore:VoCoSlicer $(VENV)/bin/python -m vococore_demo --output output/demo $(DEMO_ARGS)

# VoCo Studio, the module's three sections in a browser, on the bundled sample CT: http://127.0.0.1:8080/
# (STUDIO_ARGS="--host 0.0.0.0" listens beyond this machine and prints a one-time access token)
studio: $(STAMP)
	PYTHONPATH=VoCoCore:VoCoSlicer $(VENV)/bin/python -m VoCoStudio $(STUDIO_ARGS)

# One pytest-xdist worker per core of a CI machine (2); TEST_WORKERS=1 runs the suite in one process. Whole files go
# to a worker (--dist loadfile), so each module-scoped fixture (the quick main job, the studio server) runs once;
# the session's trained segmentation model is shared between workers through a file lock (Testing/Python/seg_model.py).
# --no-loadscope-reorder: files go out in the order conftest.py gives them (longest first), not by test count.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest Testing -q --durations=20 $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

clean:
	rm -rf $(VENV) .cache output
