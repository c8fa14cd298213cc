# Reads the results.jsonl of bench/turn.sh (with jq -rs) and prints a Markdown table of tandem against coturn: for
# each scenario and each round, tandem's figure divided by coturn's from the same round, then the median of those
# ratios over the rounds, with the medians of each server's own figures beside them (its CPU in cores, the
# generator's, the machine's idle and niced cores over the measurement), and the machine's one-minute
# load average over the scenario's measurements (median and range).
def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def fmt: if . == null then "–" else (. * 100 | round / 100 | tostring) + "x" end;
def num: if . == null then "–" else (. | round | tostring) end;
def dec: if . == null then "–" else (. * 100 | round / 100 | tostring) end;
"| scenario | delivered per server CPU-second, tandem/coturn | tandem | coturn | server cores, tandem / coturn | generator cores, tandem's runs / coturn's | machine idle / niced cores | loss %, tandem / coturn | memory per allocation, coturn/tandem (KB: tandem / coturn) | load average, median (range) |",
"|---|---|---|---|---|---|---|---|---|---|",
(group_by(.label)[] as $g |
  [($g | map(.round) | unique)[] as $r |
    ($g | map(select(.round == $r))) as $x |
    ($x | map(select(.server == "tandem"))[0]) as $t |
    ($x | map(select(.server == "coturn"))[0]) as $c |
    if $t == null or $c == null then empty else
      {cpu: div($t.delivered_per_cpu_s; $c.delivered_per_cpu_s), mem: div($c.kb_per_allocation; $t.kb_per_allocation)}
    end] as $rows |
  ($g | map(select(.server == "tandem"))) as $ts |
  ($g | map(select(.server == "coturn"))) as $cs |
  "| \($g[0].label) | \($rows | map(.cpu) | median | fmt) | \($ts | map(.delivered_per_cpu_s) | median | num) | \($cs | map(.delivered_per_cpu_s) | median | num) | \($ts | map(.server_cores) | median | dec) / \($cs | map(.server_cores) | median | dec) | \($ts | map(.generator_cores) | median | dec) / \($cs | map(.generator_cores) | median | dec) | \($g | map(.machine_idle_cores) | median | dec) / \($g | map(.machine_nice_cores) | median | dec) | \($ts | map(.loss_pct) | median | dec) / \($cs | map(.loss_pct) | median | dec) | \($rows | map(.mem) | median | fmt) (\($ts | map(.kb_per_allocation) | median | dec) / \($cs | map(.kb_per_allocation) | median | dec)) | \($g | map(.loadavg) | median | dec) (\($g | map(.loadavg) | min | dec)-\($g | map(.loadavg) | max | dec)) |")
