#!/usr/bin/env bash
# Measures a tandem cluster (several nodes sharing one Redis) side by side with a single tandem and with the
# tutorial's Node server, in one run, with tandem-load (BENCHMARKS.md, "Cluster").
#
#   bench/cluster.sh [OUT_DIR]
#
# Needs Go, Node.js, npm, jq and redis-server, and the tutorial's server.js (TUTORIAL_SERVER, as for
# bench/compare.sh, which shares its prepared copy in TUTORIAL_DIR). Every measurement starts fresh processes: a
# redis-server of its own on 127.0.0.1:$REDIS_PORT (default 6390; no persistence), the cluster's nodes on
# 127.0.0.1:9201, 9202, ... with -redis on it, or a single tandem on 127.0.0.1:9191, or the tutorial's server on
# 9292, with the flags of bench/compare.sh (-rate 0, -log-level warn, -turn-addr off). tandem-load spreads the
# users over the nodes (each relay pair's two users on different nodes) and counts the CPU time of every node and
# of redis-server together.
#
# SETS (default "closed big") chooses what is measured:
#   closed  ROUNDS (default 3) rounds of: relay with 500 and 5,000 users (closed loop, DURATION each, default
#           10s) and a login storm of 10,000 users, 100 at a time, against the tutorial, a single tandem and a
#           cluster of NODES (default 2) nodes; CLUSTER_GOMAXPROCS (default: left alone) sets the nodes'
#           GOMAXPROCS, and VARIANTS="gmp1" adds a cluster whose nodes have GOMAXPROCS=1
#   paced   ROUNDS rounds of: relay with 500 and 5,000 users at RATE (default 10000) messages a second in all,
#           every server at the same load (its latency and CPU time compared like for like; the rate each
#           reached is recorded, so a server that could not keep up shows)
# BASE_BIN, a tandem binary built from another commit, adds a cluster whose nodes run it (cluster-N-base), in the
# same rounds, for an A/B of the cluster's code (every round measures the servers one after the other).
#   big     BIG_USERS (default 50000) idle users on BIG_NODES (default 3) nodes, logged in by BIG_GENERATORS
#           (default 3) tandem-load processes (each is limited to the open-file limit): the memory per idle
#           user (nodes' RSS and Redis's used_memory), then the list and a prefix search asked on every node
#           for 10 s, with their latency
# Every result is a line of JSON in OUT_DIR/results.jsonl; OUT_DIR/summary.md has the medians and the medians
# of each round's ratios (bench/cluster-ratios.jq), and the big run's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/tandem-cluster-bench.XXXXXX")}
mkdir -p "$out"
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
nodes=${NODES:-2}
sets=${SETS:-closed big}
variants=${VARIANTS:-}
rate=${RATE:-10000}
base_bin=${BASE_BIN:-}
cluster_gomaxprocs=${CLUSTER_GOMAXPROCS:-}
big_users=${BIG_USERS:-50000}
big_nodes=${BIG_NODES:-3}
big_generators=${BIG_GENERATORS:-3}
redis_port=${REDIS_PORT:-6390}
tutorial_dir=${TUTORIAL_DIR:-${TMPDIR:-/tmp}/tandem-bench-tutorial}
tandem_addr=127.0.0.1:9191
tutorial_port=9292
node_port0=9200 # node i listens on node_port0 + i
local_addrs=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8

ulimit -n "$(ulimit -Hn)"
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
echo "== building into $out/bin"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo "+changes")
go build -o "$out/bin/tandem" ./cmd/tandem
go build -o "$out/bin/tandem-load" ./cmd/tandem-load

# The tutorial's server, prepared as bench/compare.sh does (the same directory: either script prepares it once).
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
versions="node $(node --version), ws $(cd "$tutorial_dir" && node -p "require('ws/package.json').version"), $(redis-server --version | grep -o 'v=[0-9.]*'), $(go version | cut -d' ' -f3)"

# The processes this script started and has not stopped yet, by id; stopped on exit whatever happens.
pids=()
redis_pid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

await_port() { # PORT NAME
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start listening on $1" >&2
  return 1
}

start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --maxmemory-policy noeviction \
    --daemonize no --logfile "$out/redis.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    if [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; then return 0; fi
    sleep 0.1
  done
  echo "redis-server did not start" >&2
  return 1
}

# start SERVER: tutorial, tandem, or cluster-N[-gmp1] (redis-server and N nodes). Sets urls and measured (the
# process ids whose CPU time is counted, comma-separated; a cluster's nodes first, then redis-server) and names
# (what each of measured is).
start() {
  local server=$1 n gmp i bin
  case $server in
  tutorial)
    (cd "$tutorial_dir" && exec node server.js >/dev/null 2>>"$out/tutorial.log") &
    pids+=($!); measured=$!; names='["tutorial"]'; urls=ws://127.0.0.1:$tutorial_port/
    await_port $tutorial_port tutorial ;;
  tandem)
    "$out/bin/tandem" -addr $tandem_addr -rate 0 -log-level warn -turn-addr off >>"$out/tandem.log" 2>&1 &
    pids+=($!); measured=$!; names='["tandem"]'; urls=ws://$tandem_addr/
    await_port "${tandem_addr#*:}" tandem ;;
  cluster-*)
    n=${server#cluster-}; n=${n%%-*}
    gmp=$cluster_gomaxprocs bin=$out/bin/tandem
    case $server in *-gmp1) gmp=1 ;; esac
    case $server in *-base) bin=$base_bin ;; esac
    start_redis
    urls= measured= names=
    for i in $(seq "$n"); do
      env ${gmp:+GOMAXPROCS=$gmp} "$bin" -addr 127.0.0.1:$((node_port0 + i)) -rate 0 -log-level warn \
        -turn-addr off -redis "redis://127.0.0.1:$redis_port/0" -node-id "node$i" >>"$out/cluster.log" 2>&1 &
      pids+=($!)
      measured=$measured$!,; urls=${urls}ws://127.0.0.1:$((node_port0 + i))/,; names=$names\"node$i\",
    done
    measured=$measured$redis_pid; urls=${urls%,}; names="[${names}\"redis\"]"
    for i in $(seq "$n"); do
      await_port $((node_port0 + i)) "node$i"
      for _ in $(seq 100); do # ready: registered in Redis and subscribed
        if curl -fs "http://127.0.0.1:$((node_port0 + i))/readyz" >/dev/null; then break; fi
        sleep 0.1
      done
    done ;;
  *) echo "unknown server $server" >&2; return 1 ;;
  esac
}

stop() { cleanup; }

# measure SERVER LABEL ROUND ARGS...: one tandem-load run against fresh SERVER processes, appended to
# results.jsonl with the load average at its start.
measure() {
  local server=$1 label=$2 round=$3 load
  shift 3
  start "$server"
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $label $server round $round (load average $load)"
  if "$out/bin/tandem-load" -url "$urls" -pid "$measured" -json -local-addrs $local_addrs -timeout 5m "$@" \
    2>>"$out/load.log" | jq -c --arg server "$server" --arg lab "$label" --argjson round "$round" \
    --argjson load "$load" --argjson names "$names" \
    '. + {server: $server, label: $lab, round: $round, loadavg: $load, process_names: $names}' >>"$out/results.jsonl"; then
    tail -n 1 "$out/results.jsonl" | jq -r '"   \(.messages_per_second // .logins_per_second | floor) /s; per server CPU-s \(.per_server_cpu_second // 0 | floor); p99 \(.latency.p99_ms // 0) ms\(if .processes then "; CPU s " + (.processes | map(.cpu_seconds * 100 | round / 100 | tostring) | join(" + ")) else "" end)"'
  else
    echo "   FAILED (see $out/load.log)"
  fi
  stop
}

# big: BIG_USERS idle users on BIG_NODES nodes; the memory per idle user, then the list and a search.
big() {
  local server=cluster-$big_nodes per gens=() i before_rss after_rss before_redis after_redis online
  start "$server"
  local node_pids=${measured%,*}
  rss() { local s=0 p; for p in ${node_pids//,/ }; do s=$((s + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status") * 1024)); done; echo $s; }
  used() { redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
  redis_rss() { echo $(($(awk '/^VmRSS/ {print $2}' "/proc/$redis_pid/status") * 1024)); }
  online() { local s=0 i v; for i in $(seq "$big_nodes"); do
    v=$(curl -fs "http://127.0.0.1:$((node_port0 + i))/metrics" | awk '/^tandem_users_online / {print $2}'); s=$((s + ${v%.*})); done; echo $s; }
  sleep 1
  before_rss=$(rss); before_redis=$(used); local before_redis_rss; before_redis_rss=$(redis_rss)
  local base; base=$(online)
  per=$(((big_users + big_generators - 1) / big_generators))
  echo "-- big: $big_users idle users on $big_nodes nodes, $big_generators generators (load average $(cut -d' ' -f1 /proc/loadavg))"
  local t0; t0=$(date +%s.%N)
  for i in $(seq "$big_generators"); do
    # Each generator holds its users for up to 10 minutes; it is stopped once the figures are read.
    "$out/bin/tandem-load" -url "$urls" -pid "$node_pids" -scenario idle -users "$per" -concurrency 50 \
      -settle 10m -timeout 15m -prefix "big$i-" -local-addrs $local_addrs -json >"$out/big-gen$i.json" 2>>"$out/load.log" &
    gens+=($!); pids+=($!)
  done
  for _ in $(seq 600); do
    online_now=$(online)
    if [ $((online_now - base)) -ge $((per * big_generators)) ]; then break; fi
    for g in "${gens[@]}"; do kill -0 "$g" 2>/dev/null || { echo "   a generator ended early (see $out/load.log)"; break 2; }; done
    sleep 1
  done
  local t1; t1=$(date +%s.%N)
  sleep 5 # settle
  after_rss=$(rss); after_redis=$(used); local after_redis_rss; after_redis_rss=$(redis_rss)
  online_now=$(online)
  local users=$((online_now - base))
  echo "   $users users online after $(echo "$t1 - $t0" | bc) s"
  "$out/bin/tandem-load" -url "$urls" -pid "$measured" -scenario list -query "big1-idle1" -duration 10s \
    -prefix bigls- -json 2>>"$out/load.log" >"$out/big-list.json" || echo "   list FAILED (see $out/load.log)"
  jq -c --argjson users "$users" --argjson nodes "$big_nodes" --argjson brss "$before_rss" --argjson arss "$after_rss" \
    --argjson bred "$before_redis" --argjson ared "$after_redis" --argjson bredrss "$before_redis_rss" \
    --argjson aredrss "$after_redis_rss" --argjson secs "$(echo "$t1 - $t0" | bc)" \
    --argjson load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{label: "big", server: "cluster-\($nodes)", users: $users, login_seconds: $secs, loadavg: $load,
      nodes_rss_before: $brss, nodes_rss_after: $arss, redis_used_before: $bred, redis_used_after: $ared,
      redis_rss_before: $bredrss, redis_rss_after: $aredrss,
      nodes_bytes_per_user: (($arss - $brss) / $users), redis_bytes_per_user: (($ared - $bred) / $users),
      redis_rss_bytes_per_user: (($aredrss - $bredrss) / $users),
      bytes_per_user: ((($arss - $brss) + ($ared - $bred)) / $users),
      list: (.list + {list_latency: .latency})}' "$out/big-list.json" >>"$out/results.jsonl"
  tail -n 1 "$out/results.jsonl" | jq -r '"   \(.bytes_per_user | floor) bytes per idle user (nodes \(.nodes_bytes_per_user | floor), Redis \(.redis_bytes_per_user | floor)); list of \(.list.total): p50 \(.list.list_latency.p50_ms) ms p99 \(.list.list_latency.p99_ms) ms; search: \(.list.found) found, p50 \(.list.search_latency.p50_ms) ms p99 \(.list.search_latency.p99_ms) ms"'
  for g in "${gens[@]}"; do kill -INT "$g" 2>/dev/null || true; done
  for g in "${gens[@]}"; do wait "$g" 2>/dev/null || true; done
  stop
}

servers="tutorial tandem cluster-$nodes"
for v in $variants; do servers="$servers cluster-$nodes-$v"; done
if [ -n "$base_bin" ]; then
  [ -x "$base_bin" ] || { echo "BASE_BIN $base_bin is not an executable" >&2; exit 1; }
  servers="$servers cluster-$nodes-base"
  versions="$versions, cluster-$nodes-base: $base_bin"
fi
for set in $sets; do
  case $set in
  closed)
    for round in $(seq "$rounds"); do
      for s in $servers; do measure "$s" relay-500 "$round" -scenario relay -users 500 -duration "$duration"; done
      for s in $servers; do measure "$s" relay-5000 "$round" -scenario relay -users 5000 -duration "$duration"; done
      for s in $servers; do measure "$s" login-10000 "$round" -scenario login -users 10000 -concurrency 100; done
    done ;;
  paced) # every server at the same load: latency and CPU time compared like for like
    for round in $(seq "$rounds"); do
      for n in 500 5000; do
        for s in $servers; do measure "$s" "paced-relay-$n" "$round" -scenario relay -users $n -rate "$rate" -duration "$duration"; done
      done
    done ;;
  big) big ;;
  *) echo "unknown set $set" >&2; exit 2 ;;
  esac
done

{
  echo "$versions, $(nproc) cores, commit $commit, $(date -u +%Y-%m-%d)"
  echo
  echo "| scenario | server | runs | rate /s (median) | per CPU-s of all its processes | p50 ms | p99 ms | load average |"
  echo "|---|---|---|---|---|---|---|---|"
  jq -rs '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r: . * 10 | round / 10;
    map(select(.label != "big")) | group_by([.label, .server]) | .[] |
    "| \(.[0].label) | \(.[0].server) | \(length) | \(map(.messages_per_second // .logins_per_second // 0) | median | round) | \(map(.per_server_cpu_second // 0) | median | round) | \(map(.latency.p50_ms // 0) | median | r) | \(map(.latency.p99_ms // 0) | median | r) | \(map(.loadavg) | min)–\(map(.loadavg) | max) |"
  ' "$out/results.jsonl"
  echo
  jq -rs -f bench/cluster-ratios.jq "$out/results.jsonl"
} >"$out/summary.md"
cat "$out/summary.md"
echo "== results in $out"
