#!/bin/sh
# memory_table.sh: the README's precision/checkpointing table.  Runs
# `cliptrain bench` for fp32, bf16 and fp16, each without and with
# activation checkpointing, and prints one markdown row per run.
#   bench/memory_table.sh [PRESET] [BATCH] [STEPS] [CHUNKS]
ct=${CLIPTRAIN:-./cliptrain}
preset=${1:-vitb32} batch=${2:-16} steps=${3:-2} chunks=${4:-2}
# field NAME FORMAT: a number from bench's JSON line on stdin
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" | awk -v f="$2" '{ printf f, $1 }'; }
echo "| precision | checkpoint | activations MiB | peak RSS MiB | samples/s |"
echo "| --- | --- | --- | --- | --- |"
for p in fp32 bf16 fp16; do
  for c in 0 "$chunks"; do
    line=$("$ct" bench --preset "$preset" --batch "$batch" --steps "$steps" --precision "$p" \
      --checkpoint "$c") || exit 1
    echo "| $p | $c | $(echo "$line" | field activation_mib %d) | $(echo "$line" | field peak_rss_mib %d) | $(echo "$line" | field samples_per_s %.2f) |"
  done
done
