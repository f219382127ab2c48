# crypto-fraud-detection: the two commands are `make demo` and `make test`.
# Both create .venv and install the pinned dependencies (requirements.lock) themselves, compiled to
# bytecode at install: this environment sets PYTHONDONTWRITEBYTECODE, and every process (scorer
# workers, side processes, CLI runs in tests) would otherwise compile Feast, MLflow and GX anew.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

.PHONY: demo demo-stop test install lint typecheck unit broker-start broker-stop clean help

help:
	@echo "make demo   run the whole story locally (Kafka, Feast, MLflow, scorer), no Docker needed"
	@echo "make test   lint, type-check and run every test against a real local Kafka broker"

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@echo "[install] pinned dependencies from requirements.lock into $(VENV)"
	@$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install
	@infra/test.sh

demo: install
	@$(BIN)/fraud demo

demo-stop:
	@$(BIN)/fraud demo --stop

broker-start:
	@infra/kafka/broker.sh start

broker-stop:
	@infra/kafka/broker.sh stop

clean:
	-infra/kafka/broker.sh stop
	rm -rf data .mypy_cache .ruff_cache .pytest_cache
