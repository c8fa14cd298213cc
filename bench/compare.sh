#!/usr/bin/env bash
# Measures tandem and the tutorial's Node server side by side, in one run, with tandem-load (BENCHMARKS.md).
#
#   bench/compare.sh [OUT_DIR]
#
# Needs Go, Node.js and npm, and the tutorial's server.js, which is not part of tandem: TUTORIAL_SERVER names your
# copy of it. It is copied to a directory outside the repo (TUTORIAL_DIR, default $TMPDIR/tandem-bench-tutorial),
# where `npm install ws` is run once (later runs reuse that directory and need no TUTORIAL_SERVER); its
# port is changed to 9292 and its console.log calls are commented out (the "console.log off" figures; one relay
# figure is also taken with them on, printing to /dev/null). tandem listens on 127.0.0.1:9191 with -rate 0 (no
# per-connection rate limit: a pair relays thousands of messages a second) and -log-level warn.
#
# Each measurement starts fresh server processes, and each round measures every server in turn, so the figures of
# one round come from the same minute on the same machine. SETS (default "closed paced flat flat-closed") chooses
# what is measured: closed-loop scenarios, relays paced at RATE messages a second (default 15000), the flatness
# curve paced and closed. ROUNDS (default 5) rounds are made of closed and paced, FLAT_ROUNDS (default 3) of the
# flatness curves; DURATION (default 10s) is each relay and setup measurement. Every result is a line of JSON in
# OUT_DIR/results.jsonl; OUT_DIR/summary.md has the medians, and the medians of each round's tandem/tutorial
# ratios (bench/ratios.jq).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench.XXXXXX")}
mkdir -p "$out"
rounds=${ROUNDS:-5}
flat_rounds=${FLAT_ROUNDS:-3}
duration=${DURATION:-10s}
rate=${RATE:-15000}
sets=${SETS:-closed paced flat flat-closed}
tutorial_dir=${TUTORIAL_DIR:-${TMPDIR:-/tmp}/tandem-bench-tutorial}
tandem_addr=127.0.0.1:9191
tutorial_port=9292
# Connections come from several loopback addresses, so that tens of thousands of them (and the TIME_WAIT they
# leave) never run out of ephemeral ports.
local_addrs=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8

ulimit -n "$(ulimit -Hn)"
echo "== building into $out/bin"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo "+changes")
go build -o "$out/bin/tandem" ./cmd/tandem
go build -o "$out/bin/tandem-load" ./cmd/tandem-load

if [ ! -d "$tutorial_dir/node_modules/ws" ]; then
  echo "== the tutorial's server in $tutorial_dir"
  mkdir -p "$tutorial_dir"
  if [ ! -f "${TUTORIAL_SERVER:-}" ]; then
    echo "set TUTORIAL_SERVER to the tutorial's server.js (BENCHMARKS.md, \"Reproducing\")" >&2
    exit 1
  fi
  sed "s/9090/$tutorial_port/" "$TUTORIAL_SERVER" >"$tutorial_dir/server-log.js"
  sed 's/console\.log(/\/\/ console.log(/' "$tutorial_dir/server-log.js" >"$tutorial_dir/server.js"
  (cd "$tutorial_dir" && npm install --no-audit --no-fund ws >/dev/null)
fi
node_version=$(node --version)
ws_version=$(cd "$tutorial_dir" && node -p "require('ws/package.json').version")

server_pid=
# start SERVER: runs one of tandem, tandem-gmp1 (GOMAXPROCS=1), tandem-p1 (one epoll loop), tutorial, tutorial-log, and waits until it accepts.
start() {
  local port
  case $1 in
  tandem)       "$out/bin/tandem" -addr $tandem_addr -rate 0 -log-level warn -turn-addr off >>"$out/tandem.log" 2>&1 & ;;
  tandem-gmp1)  GOMAXPROCS=1 "$out/bin/tandem" -addr $tandem_addr -rate 0 -log-level warn -turn-addr off >>"$out/tandem.log" 2>&1 & ;;
  tandem-p1)    "$out/bin/tandem" -addr $tandem_addr -rate 0 -log-level warn -turn-addr off -pollers 1 >>"$out/tandem.log" 2>&1 & ;;
  tutorial)     (cd "$tutorial_dir" && exec node server.js >/dev/null 2>>"$out/tutorial.log") & ;;
  tutorial-log) (cd "$tutorial_dir" && exec node server-log.js >/dev/null 2>>"$out/tutorial.log") & ;;
  esac
  server_pid=$!
  case $1 in tandem*) port=${tandem_addr#*:} ;; *) port=$tutorial_port ;; esac
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not start listening" >&2
  return 1
}

stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

# measure SERVER LABEL ROUND ARGS...: one tandem-load run against a fresh SERVER, appended to results.jsonl.
measure() {
  local server=$1 label=$2 round=$3 url
  shift 3
  case $server in tandem*) url=ws://$tandem_addr/ ;; *) url=ws://127.0.0.1:$tutorial_port/ ;; esac
  start "$server"
  echo "-- $label $server round $round"
  if "$out/bin/tandem-load" -url "$url" -pid "$server_pid" -json -local-addrs $local_addrs -timeout 5m "$@" \
    2>>"$out/load.log" | jq -c --arg server "$server" --arg lab "$label" --argjson round "$round" \
    '. + {server: $server, "label": $lab, round: $round}' >>"$out/results.jsonl"; then
    tail -n 1 "$out/results.jsonl" | jq -r '"   \(.messages_per_second // .logins_per_second // .setups_per_second // .rss_bytes_per_connection | floor) /s or B; per server CPU-s \(.per_server_cpu_second // 0 | floor); p99 \(.latency.p99_ms // 0) ms"'
  else
    echo "   FAILED (see $out/load.log)"
  fi
  stop
}

servers="tutorial tandem tandem-gmp1"
for set in $sets; do
  case $set in
  closed) # as fast as each server answers (closed loop), fresh servers
    for round in $(seq "$rounds"); do
      for s in $servers tutorial-log; do measure $s relay-500 "$round" -scenario relay -users 500 -duration "$duration"; done
      for s in $servers; do measure $s relay-5000 "$round" -scenario relay -users 5000 -duration "$duration"; done
      for s in $servers; do measure $s login-10000 "$round" -scenario login -users 10000 -concurrency 100; done
      for s in $servers; do measure $s setup-1000 "$round" -scenario setup -users 1000 -duration "$duration"; done
      for s in $servers; do measure $s idle-19500 "$round" -scenario idle -users 19500 -concurrency 100; done
    done ;;
  paced) # every server at the same load: latency and CPU time compared like for like
    for round in $(seq "$rounds"); do
      for n in 500 5000; do
        for s in $servers; do measure $s "paced-relay-$n" "$round" -scenario relay -users $n -rate "$rate" -duration "$duration"; done
      done
    done ;;
  flat) # the flatness curve: the same load with more users online
    for round in $(seq "$flat_rounds"); do
      for n in 1000 5000 19000; do
        for s in tutorial tandem; do
          measure $s "flat-relay-$n" "$round" -scenario relay -users "$n" -rate "$rate" -duration "$duration"
          measure $s "flat-login-online-$((n - 1000))" "$round" -scenario login -users 1000 -concurrency 100 -online $((n - 1000))
        done
      done
    done ;;
  flat-closed) # the same, closed loop: more users also means more messages in flight
    for round in $(seq "$flat_rounds"); do
      for n in 1000 5000 19000; do
        for s in tutorial tandem; do
          measure $s "flat-closed-relay-$n" "$round" -scenario relay -users "$n" -duration "$duration"
          measure $s "flat-closed-login-$n" "$round" -scenario login -users "$n" -concurrency 100
        done
      done
    done ;;
  *) echo "unknown set $set" >&2; exit 2 ;;
  esac
done

{
  echo "node $node_version, ws $ws_version, $(go version | cut -d' ' -f3), $(nproc) cores, commit $commit, $(date -u +%Y-%m-%d)"
  echo
  echo "| scenario | server | runs | rate /s (median) | per server CPU-s | p50 ms | p99 ms | bytes/conn |"
  echo "|---|---|---|---|---|---|---|---|"
  jq -rs '
    def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
    def r: . * 10 | round / 10;
    group_by([.label, .server]) | .[] |
    "| \(.[0].label) | \(.[0].server) | \(length) | \(map(.messages_per_second // .logins_per_second // .setups_per_second // 0) | median | round) | \(map(.per_server_cpu_second // 0) | median | round) | \(map(.latency.p50_ms // 0) | median | r) | \(map(.latency.p99_ms // 0) | median | r) | \(map(.rss_bytes_per_connection // 0) | median | round) |"
  ' "$out/results.jsonl"
  echo
  echo "tandem against the tutorial's server, the median of each round's ratio:"
  echo
  jq -rs -f bench/ratios.jq "$out/results.jsonl"
} >"$out/summary.md"
cat "$out/summary.md"
echo "== results in $out"
