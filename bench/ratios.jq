# Reads the results.jsonl of bench/compare.sh (with jq -rs) and prints a Markdown table of tandem against the
# tutorial's server: for each scenario and each round, tandem's figure divided by the tutorial's from the same
# round, then the median of those ratios over the rounds.
def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def rate: .messages_per_second // .logins_per_second // .setups_per_second;
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def fmt: if . == null then "–" else (. * 100 | round / 100 | tostring) + "×" end;
def ratios($t; $n): {
  rate: div($n | rate; $t | rate),
  cpu: div($t.per_server_cpu_second; $n.per_server_cpu_second),   # tandem's CPU per unit / the tutorial's
  p99: div($n.latency.p99_ms; $t.latency.p99_ms),
  mem: div($n.rss_bytes_per_connection; $t.rss_bytes_per_connection)
};
"| scenario | tandem | rate | CPU per unit | p99 latency | memory per connection |",
"|---|---|---|---|---|---|",
(group_by(.label)[] as $g |
  ["tandem", "tandem-gmp1", "tandem-p1"][] as $variant |
  [($g | map(.round) | unique)[] as $r |
    ($g | map(select(.round == $r))) as $x |
    ($x | map(select(.server == "tutorial"))[0]) as $t |
    ($x | map(select(.server == $variant))[0]) as $n |
    if $t == null or $n == null then empty else ratios($t; $n) end] as $rows |
  if ($rows | length) == 0 then empty else
    "| \($g[0].label) | \({"tandem": "GOMAXPROCS=2", "tandem-gmp1": "GOMAXPROCS=1", "tandem-p1": "-pollers 1"}[$variant]) | \($rows | map(.rate) | median | fmt) | \($rows | map(.cpu) | median | fmt) | \($rows | map(.p99) | median | fmt) | \($rows | map(.mem) | median | fmt) |"
  end)
