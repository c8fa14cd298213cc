# Reads the results.jsonl of bench/cluster.sh (with jq -rs) and prints Markdown tables: each cluster against the
# tutorial's single server and against a single tandem, the median over the rounds of each round's ratio; and the
# big run's figures.
# The median; of an even number of rounds, the mean of the middle two.
def median: map(select(. != null)) | sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def rate: .messages_per_second // .logins_per_second;
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def fmt: if . == null then "–" else (. * 100 | round / 100 | tostring) + "×" end;
def ratios($base; $c): {
  rate: div($c | rate; $base | rate),
  cpu: div($base.per_server_cpu_second; $c.per_server_cpu_second), # the cluster's CPU per unit / the base's
  p99: div($c.latency.p99_ms; $base.latency.p99_ms)
};
def rows($against):
  group_by(.label)[] as $g |
  ($g | map(.server) | unique | map(select(startswith("cluster-"))))[] as $variant |
  [($g | map(.round) | unique)[] as $r |
    ($g | map(select(.round == $r))) as $x |
    ($x | map(select(.server == $against))[0]) as $b |
    ($x | map(select(.server == $variant))[0]) as $c |
    if $b == null or $c == null then empty else ratios($b; $c) end] as $rows |
  if ($rows | length) == 0 then empty else
    "| \($g[0].label) | \($variant) | \($against) | \($rows | length) | \($rows | map(.rate) | median | fmt) | \($rows | map(.cpu) | median | fmt) | \($rows | map(.p99) | median | fmt) |"
  end;
map(select(.label != "big")) as $runs |
"| scenario | cluster | against | rounds | rate | CPU per unit (all processes) | p99 latency |",
"|---|---|---|---|---|---|---|",
($runs | rows("tutorial")),
($runs | rows("tandem")),
"",
(map(select(.label == "big"))[] |
  "\(.users) idle users on \(.server) (logged in in \(.login_seconds * 10 | round / 10) s): \(.bytes_per_user | round) bytes per user (nodes' RSS \(.nodes_bytes_per_user | round), Redis used_memory \(.redis_bytes_per_user | round); Redis RSS \(.redis_rss_bytes_per_user | round)). The list (\(.list.total) online) p50 \(.list.list_latency.p50_ms) ms, p99 \(.list.list_latency.p99_ms) ms over \(.list.lists) asks; the search for \"\(.list.query)\" (\(.list.found) found) p50 \(.list.search_latency.p50_ms) ms, p99 \(.list.search_latency.p99_ms) ms over \(.list.searches); load average \(.loadavg).")
