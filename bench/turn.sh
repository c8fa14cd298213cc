#!/usr/bin/env bash
# Measures tandem's TURN relay and coturn side by side with tandem-turnload (BENCHMARKS.md, "TURN relay").
#
#   bench/turn.sh [OUT_DIR]
#
# Needs Go and coturn (installed with apt-get if /usr/bin/turnserver is missing, which needs root). Both servers
# listen on 127.0.0.1 with the same shared secret and may relay to loopback peers; tandem's allocation and TCP caps
# are lifted (every client of the bench comes from 127.0.0.1). tandem-turnload gets its credentials from a tandem
# login (tandem accepts only those) and mints them with the secret for coturn.
#
# Each measurement starts a fresh server process; each round measures every scenario on both servers in turn, so
# the two figures of a ratio come from the same minute on the same machine. SETS (default "paced-udp max-udp
# paced-tcp max-tcp memory") chooses the scenarios, ROUNDS (default 5) the rounds, DURATION (default 10s) each
# measurement, after WARMUP (default 2s). Every result is a line of JSON in OUT_DIR/results.jsonl;
# OUT_DIR/summary.md has the medians over the rounds of each round's tandem/coturn ratios. TANDEM_BIN measures a
# tandem binary built elsewhere (an older commit, say) instead of this checkout's. ENGINE (default loops: the
# generator's own event loops, LOOPS of them, default 1) or goroutines (its first data path, a goroutine per client)
# chooses how tandem-turnload drives the clients.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/tandem-turn-bench.XXXXXX")}
mkdir -p "$out"
rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
warmup=${WARMUP:-2s}
sets=${SETS:-paced-udp max-udp paced-tcp max-tcp memory}
engine=${ENGINE:-loops}
loops=${LOOPS:-1}
secret=tandem-bench-secret-$RANDOM$RANDOM$RANDOM
web_addr=127.0.0.1:9494
tandem_turn=127.0.0.1:3578
coturn_turn=127.0.0.1:3579

if [ ! -x /usr/bin/turnserver ]; then
  echo "== installing coturn"
  apt-get install -y coturn >/dev/null
fi
ulimit -n "$(ulimit -Hn)"
echo "== building into $out/bin"
mkdir -p "$out/bin"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo "+changes")
if [ -n "${TANDEM_BIN:-}" ]; then
  cp "$TANDEM_BIN" "$out/bin/tandem"
  commit="$commit (tandem: $TANDEM_BIN)"
else
  go build -o "$out/bin/tandem" ./cmd/tandem
fi
go build -o "$out/bin/tandem-turnload" ./cmd/tandem-turnload
coturn_version=$(dpkg-query -W -f='${Version}' coturn 2>/dev/null || echo unknown)

server_pid=
# start SERVER: starts tandem or coturn and waits until its TURN port accepts TCP connections.
start() {
  local port
  case $1 in
  tandem)
    "$out/bin/tandem" -addr $web_addr -turn-addr $tandem_turn -turn-secret "$secret" -turn-allow-loopback \
      -turn-max-allocations-per-session -1 -turn-max-allocations-per-address -1 \
      -turn-max-tcp-conns -1 -turn-max-tcp-conns-per-address -1 \
      -log-level warn -data-dir "$out/tandem-data" >>"$out/tandem.log" 2>&1 &
    port=${tandem_turn#*:} ;;
  coturn)
    /usr/bin/turnserver -n --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "${coturn_turn#*:}" \
      --min-port 40000 --max-port 49999 --use-auth-secret --static-auth-secret "$secret" --realm tandem \
      --allow-loopback-peers --no-tls --no-dtls --no-cli --no-stdout-log --log-file /dev/null --simple-log \
      --pidfile "$out/coturn.pid" >>"$out/coturn.log" 2>&1 &
    port=${coturn_turn#*:} ;;
  esac
  server_pid=$!
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
  server_pid=
}
trap stop EXIT

# measure SERVER SET ROUND: one tandem-turnload run against a fresh SERVER, appended to results.jsonl.
measure() {
  local server=$1 set=$2 round=$3 args creds
  case $set in
  paced-udp) args=(-calls 50 -rate 100) ;;
  max-udp)   args=(-calls 10 -rate 0 -window 32) ;;
  paced-tcp) args=(-calls 50 -rate 100 -transport tcp) ;;
  max-tcp)   args=(-calls 10 -rate 0 -window 32 -transport tcp) ;;
  memory)    args=(-calls 500 -idle) ;;
  esac
  case $server in
  tandem) creds=(-server $tandem_turn -login "ws://$web_addr/ws") ;;
  coturn) creds=(-server $coturn_turn -secret "$secret") ;;
  esac
  start "$server"
  if ! timeout 5m "$out/bin/tandem-turnload" "${creds[@]}" "${args[@]}" -pid "$server_pid" -warmup "$warmup" \
    -duration "$duration" -label "$set" -engine "$engine" -loops "$loops" >"$out/last.json" 2>>"$out/turnload.log"; then
    echo "   $server $set round $round failed (see $out/turnload.log)" >&2
    stop
    return 0
  fi
  stop
  # The machine's load average (one minute) as the measurement ended: a shared machine's figures need it.
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  jq -c --arg server "$server" --argjson round "$round" --arg commit "$commit" --arg coturn "$coturn_version" \
    --argjson load "$load" '. + {server: $server, round: $round, commit: $commit, coturn: $coturn, loadavg: $load}' \
    "$out/last.json" >>"$out/results.jsonl"
  jq -r --arg s "$server" --arg load "$load" '"   \($s) \(.label) (load \($load)): \(.delivered_per_cpu_s // 0 | floor) delivered/CPU-s, \(.server_cores // 0 | . * 100 | round / 100) cores, \(.delivered_per_s // 0 | floor)/s, loss \(.loss_pct | . * 1000 | round / 1000)%, generator \(.generator_cores // 0 | . * 100 | round / 100) cores, machine idle \(.machine_idle_cores // 0 | . * 100 | round / 100) / niced \(.machine_nice_cores // 0 | . * 100 | round / 100) cores\(if .transport == "udp" and (.idle | not) then ", UDP socket drops: generator \(.generator_udp_drops // 0), others \(.other_udp_drops // 0)" else "" end)\(if .kb_per_allocation then ", \(.kb_per_allocation | . * 10 | round / 10) KB/allocation" else "" end)"' "$out/last.json"
}

for round in $(seq "$rounds"); do
  echo "== round $round of $rounds"
  for set in $sets; do
    for server in tandem coturn; do
      measure "$server" "$set" "$round"
    done
  done
done

jq -rs -f bench/turn-ratios.jq "$out/results.jsonl" | tee "$out/summary.md"
echo "== results in $out"
