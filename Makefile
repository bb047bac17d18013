# One entry point for people and CI. `make test` works on a fresh Debian machine with
# Python 3.11: it builds the virtualenv, installs the package, redis-server, promtool and chromium.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test bench soak scale lint format clean

setup: $(STAMP)

# The C extensions (seqlock, book, level parser, publisher levels) are built by the editable
# install: rebuild when one changes.
C_SOURCES := mdpipe/shm/_seqlock.c mdpipe/_book.c mdpipe/venues/_levels.c mdpipe/publisher/_json.c
$(STAMP): pyproject.toml setup.py $(C_SOURCES) readers/c/mdpipe_seqlock.h readers/c/mdpipe_layout.h
	@PYTHON=$(PYTHON) scripts/ensure-system-deps.sh build
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@$(BIN)/python -c 'from mdpipe.shm import seqlock; print("seqlock:", seqlock.IMPLEMENTATION)'
	@$(BIN)/python -c 'from mdpipe import hot_path; print("book and level readers:", hot_path.IMPLEMENTATION)'
	touch $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh

demo: setup
	@MDPIPE_SKIP_PROMTOOL=1 MDPIPE_SKIP_CHROMIUM=1 scripts/ensure-system-deps.sh
	$(BIN)/python scripts/demo.py

# Most tests wait on real processes and sockets: one worker more than cores (at most 5), a
# test file per worker so the instances a file's tests share start once.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$((n + 1)))
test: setup system-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: setup system-deps
	@for f in $(filter-out bench/soak.py bench/scale.py,$(wildcard bench/*.py)); do echo "== $$f"; $(BIN)/python $$f || exit 1; done

soak: setup system-deps
	$(BIN)/python bench/soak.py

scale: setup system-deps
	$(BIN)/python bench/scale.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
