# Two entry points: `make run` (the main job on local Spark and local files) and `make test`.
# Each creates .venv and installs what it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_WEIGHTS := ../shared/models/mobilenet_v2_1.0_224_no_top.h5
# Real ImageNet weights without a network: the shared file when it is there, else Keras' download.
FRUITLAKE_WEIGHTS ?= $(if $(wildcard $(SHARED_WEIGHTS)),$(abspath $(SHARED_WEIGHTS)),imagenet)
export FRUITLAKE_WEIGHTS
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
# The tested versions, pinned: the same file the EMR nodes' wheelhouse is downloaded with.
CONSTRAINTS := src/fruitlake/constraints.txt
INPUT ?= data/sample
OUTPUT ?= out/sample
# S3A connector jars for offline use (tests against a local S3 API server): the PyPI sdist of
# sagemaker-pyspark ships hadoop-aws and the AWS SDK bundle it was built with; we keep only those two.
JARS_DIR := .cache/jars
S3A_JARS_SDIST := sagemaker-pyspark==1.4.5
S3A_JARS_IN_SDIST := sagemaker_pyspark-1.4.5/deps/jars
S3A_JARS := hadoop-aws-3.3.1.jar aws-java-sdk-bundle-1.11.901.jar
FRUITLAKE_S3A_JARS ?= $(abspath $(JARS_DIR))

.PHONY: run test browser lint bench clean install jars

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -qq --upgrade pip
	@$(BIN)/pip install -qq --constraint $(CONSTRAINTS) '.[dev]'
	@touch $@

# -qq: pip's warnings too (a configured index location that is not there, "Location ... is ignored").
# Then the JVM's class archive for local sessions (fruitlake/jvmcache_build.py): made once per Java and Spark install.
install: $(BIN)/.installed
	@$(BIN)/pip install -qq --no-deps --force-reinstall .
	@$(BIN)/python -m fruitlake.jvmcache_build

$(JARS_DIR)/.fetched: | $(BIN)/.installed
	rm -rf $(JARS_DIR) && mkdir -p $(JARS_DIR)/sdist
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: '$(S3A_JARS_SDIST)' -d $(JARS_DIR)/sdist
	tar -xzf $(JARS_DIR)/sdist/*.tar.gz -C $(JARS_DIR) --strip-components=3 \
		$(addprefix $(S3A_JARS_IN_SDIST)/,$(S3A_JARS))
	rm -rf $(JARS_DIR)/sdist
	touch $@

jars: $(JARS_DIR)/.fetched

run: install
	@test -d $(INPUT) || $(BIN)/fruitlake sample-data $(INPUT)
	@$(BIN)/fruitlake run $(INPUT) $(OUTPUT) --mode overwrite

# Two pytest workers (pytest-xdist), one test file each at a time: a file's module fixtures (a moto server, a
# cluster brought up once) stay in one process, and one worker's JVM or pip start overlaps the other's CNN.
# Files go out in collection order, the longest first (tests/conftest.py, FILE_SECONDS; bench/file_seconds.py).
TEST_WORKERS ?= 2
test: install jars browser  # pytest prints the 25 slowest tests (pyproject: --durations=25)
	FRUITLAKE_S3A_JARS=$(FRUITLAKE_S3A_JARS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The report tests render report.html in headless Chromium: Debian's package, installed once (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium (apt-get as root): the report rendering test will fail" >&2

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build out data .pytest_cache
