# One entry point for people and CI. `make test` works on a fresh Debian machine with
# Python 3.11: it builds the virtualenv, installs the package and redis-server.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup redis demo test bench soak lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

redis:
	@scripts/ensure-redis.sh

demo: setup redis
	$(BIN)/python scripts/demo.py

test: setup redis
	$(BIN)/python -m pytest -q

bench: setup redis
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

soak: setup redis
	$(BIN)/python bench/soak.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
