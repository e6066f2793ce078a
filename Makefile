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
INPUT ?= data/sample
OUTPUT ?= out/sample

.PHONY: run test browser lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '.[dev]'
	touch $@

install: $(BIN)/.installed
	$(BIN)/pip install --quiet --no-deps --force-reinstall .

run: install
	@test -d $(INPUT) || $(BIN)/fruitlake sample-data $(INPUT)
	$(BIN)/fruitlake run $(INPUT) $(OUTPUT) --mode overwrite

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The report tests render report.html in headless Chromium: Debian's package, installed once (CI runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium (apt-get as root): the report rendering test will fail" >&2

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) build out data .pytest_cache
