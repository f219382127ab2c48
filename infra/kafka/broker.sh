#!/usr/bin/env bash
# A local single-node Apache Kafka broker (KRaft) for `make demo` and `make test`.
#
#   infra/kafka/broker.sh start    resolve the jars (once), format storage (once), start, wait until ready
#   infra/kafka/broker.sh stop     stop exactly the broker this script started (by its pid file)
#   infra/kafka/broker.sh status   say whether it runs
#
# Java 17 and Maven are the only prerequisites. Everything lives in git-ignored folders:
#   jars   KAFKA_CACHE  (default .cache/kafka)     data, log, pid   KAFKA_HOME (default data/kafka)
# Listens on 127.0.0.1 only: KAFKA_PORT (default 9092) and KAFKA_CONTROLLER_PORT (default 9093).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
KAFKA_CACHE="${KAFKA_CACHE:-$ROOT/.cache/kafka}"
KAFKA_HOME="${KAFKA_HOME:-$ROOT/data/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
READY_SECONDS="${KAFKA_READY_SECONDS:-90}"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"

LIBS="$KAFKA_CACHE/libs"
PIDFILE="$KAFKA_HOME/broker.pid"
LOGFILE="$KAFKA_HOME/broker.log"
CONFIG="$KAFKA_HOME/server.properties"
LOG4J="$KAFKA_HOME/log4j2.properties"
DATADIR="$KAFKA_HOME/kraft-logs"

say() { echo "[kafka] $*" >&2; }

resolve_jars() {
  local stamp="$LIBS/.resolved-$(sha1sum "$HERE/pom.xml" | cut -c1-12)"
  [[ -f "$stamp" ]] && return 0
  command -v mvn >/dev/null || { say "mvn not found: install Maven (and Java 17) to run the local broker"; exit 1; }
  say "resolving Apache Kafka jars from Maven Central into $LIBS (once)"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIBS" -DincludeScope=runtime >"$KAFKA_CACHE/mvn.log" 2>&1 \
    || { say "mvn failed; see $KAFKA_CACHE/mvn.log"; tail -20 "$KAFKA_CACHE/mvn.log" >&2; exit 1; }
  touch "$stamp"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  # The pid must still be our broker (a recycled pid belongs to someone else).
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$CONFIG"; then
    echo "$pid"; return 0
  fi
  return 1
}

write_config() {
  mkdir -p "$KAFKA_HOME"
  cat >"$CONFIG" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=${DATADIR}
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
log.segment.bytes=268435456
EOF
  cat >"$LOG4J" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${LOGFILE}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
EOF
}

java_cmd() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null || { say "java not found: install Java 17"; exit 1; }
  echo "$java"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  if pid="$(running_pid)"; then say "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  if port_open "$KAFKA_PORT"; then
    say "port $KAFKA_PORT is taken by a process this script did not start; set KAFKA_PORT or stop it"; exit 1
  fi
  resolve_jars
  write_config
  local java; java="$(java_cmd)"
  if [[ ! -f "$DATADIR/meta.properties" ]]; then
    say "formatting KRaft storage in $DATADIR"
    "$java" -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J" kafka.tools.StorageTool format \
      --config "$CONFIG" --cluster-id "$("$java" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      --ignore-formatted >>"$KAFKA_HOME/format.log" 2>&1 \
      || { say "storage format failed; see $KAFKA_HOME/format.log"; exit 1; }
  fi
  say "starting broker on 127.0.0.1:$KAFKA_PORT (log: $LOGFILE)"
  # shellcheck disable=SC2086
  nohup "$java" $HEAP -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" kafka.Kafka "$CONFIG" \
      >>"$KAFKA_HOME/broker.out" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + READY_SECONDS))
  until grep -q "Kafka Server started" "$LOGFILE" 2>/dev/null && port_open "$KAFKA_PORT"; do
    if ! running_pid >/dev/null; then
      say "broker exited during start; see $LOGFILE and $KAFKA_HOME/broker.out"; tail -20 "$KAFKA_HOME/broker.out" >&2 || true
      rm -f "$PIDFILE"; exit 1
    fi
    if (( SECONDS >= deadline )); then
      say "broker not ready after ${READY_SECONDS}s; see $LOGFILE"; exit 1
    fi
    sleep 0.5
  done
  say "ready (pid $(cat "$PIDFILE"))"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then say "not running"; rm -f "$PIDFILE"; return 0; fi
  say "stopping broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "still alive after 30s, killing"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  say "stopped"
}

status() {
  if pid="$(running_pid)"; then say "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; else say "not running"; return 3; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) stop; rm -rf "$DATADIR"; say "storage wiped" ;;
  *) echo "usage: $0 {start|stop|status|reset}" >&2; exit 2 ;;
esac
