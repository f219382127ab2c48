#!/usr/bin/env bash
# `make test`: ruff, mypy and pytest against a real local Kafka broker.
# Starts the broker if it is not running and stops it afterwards only if it started it.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin

started=0
if ! infra/kafka/broker.sh status >/dev/null 2>&1; then
  infra/kafka/broker.sh start || exit 1
  started=1
fi
cleanup() { if [[ $started == 1 ]]; then infra/kafka/broker.sh stop; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

rc=0
echo "== ruff"; $BIN/ruff check . && $BIN/ruff format --check . || rc=1
echo "== mypy"; $BIN/mypy || rc=1
echo "== pytest"; $BIN/pytest "$@" || rc=1
exit $rc
