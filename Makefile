# Two entry points for people (`make demo`, `make test`); everything else is set-up they depend on.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp's name changes whenever pyproject.toml does, so an edited pin reinstalls.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
# Peers we check interoperability against, installed beside (not into) our environment
# because their own pins clash with ours; tests put this folder on sys.path.
SIDE   := .cache/side

.PHONY: setup side demo test bench wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# bubblewrap isolates generated code in the HumanEval sandbox; without it that harness runs
	@# only with --unsafe. Installed when we can (root with apt), never required.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) || \
	  echo "note: bubblewrap not installed; code evaluation will need --unsafe"; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# compat: the checkout itself goes on sys.path, so Kiln's packages win over a folder of the same name in
	@# the working directory (an output root holds etl/); setuptools' default finder loses to such a folder.
	$(PY) -m pip install -q -e ".[etl,training,dev]" --config-settings editable_mode=compat
	rm -f $(VENV)/.installed-*
	touch $@

# Peers the tests compare against (mosaicml-streaming, datatrove), each in its own folder.
side: setup
	@for script in scripts/side_install_*.sh; do if [ -f "$$script" ]; then bash "$$script" || exit 1; fi; done

demo: setup
	$(PY) -m jobs.demo

# Two pytest workers, each taking whole groups (tests/conftest.py): a file, so that its fixtures, such as
# its test cluster, start once; and the files that read a shared run (the demo's, the refresh nights),
# which then runs once. In one process the suite left a third of the 2-core machine idle, while tests
# waited on JVMs and subprocesses: 32% idle over the run, 20:56 in all, against 17:34 with two workers
# taking whole files.
# Each worker has its own Spark session. TEST_WORKERS=0 runs the suite in pytest's own process.
TEST_WORKERS ?= 2
test: setup side
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# For clusters (docs/cluster.md): the wheel, to install as a cluster library, and the same packages as
# a .zip for spark-submit --py-files (Spark puts only .zip, .egg and .py files on the executors'
# Python path, not a .whl; a wheel is a zip archive, so the copy imports the same way).
wheel:
	rm -rf build dist/kiln-*
	$(PY) -m pip wheel -q --no-deps -w dist .
	cp dist/kiln-0.1.0-py3-none-any.whl dist/kiln-0.1.0.zip

bench: setup
	@echo "Benchmarks are scripts: see docs/benchmarks.md for how to run each one."

clean:
	rm -rf $(VENV) .cache out demo_out build dist
