# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make demo   - create .venv, install ser-batch, label the example recordings (embedded SQLite)
#   make test   - create .venv, install ser-batch with test tools, install redis-server/PostgreSQL
#                 when missing (root or sudo), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/ser-batch submit examples/recordings
	$(BIN)/ser-batch results --format csv

test: $(VENV)/.installed
	scripts/install-test-services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r producer worker ser_model ser_batch migrations
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache
