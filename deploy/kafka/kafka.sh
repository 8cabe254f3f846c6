#!/usr/bin/env bash
# Local Apache Kafka (KRaft, one broker+controller) from Maven Central jars.
#   deploy/kafka/kafka.sh fetch            fetch the jars once into ~/.cache/complaints
#   deploy/kafka/kafka.sh run --port 9092  run in the foreground until Ctrl-C
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
[ -x "$py" ] || py=python3
cd "$here" && exec "$py" -m shared.infra.kafka_local "$@"
