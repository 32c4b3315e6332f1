# Flywheel — the two commands a user needs: `make demo` and `make test`.
# Both create .venv if missing and install the pinned dependency set (constraints.txt).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-integration bench lint format install clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests need (headless Chromium renders the Flywheel UI page).
system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium (UI screenshot test will fail)"

demo: $(STAMP)
	$(BIN)/flywheel demo

test: $(STAMP) system-deps
	$(BIN)/pytest tests -m "not twin"

# The production twin (CeleryExecutor on Postgres + Redis, MLflow server, S3) running the loop.
test-integration: $(STAMP) system-deps
	$(BIN)/pytest tests -m twin

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .flywheel .pytest_cache .ruff_cache .import_linter_cache
