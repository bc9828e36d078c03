#!/bin/sh
# ddp_scaling.sh: two cores as 2 threads of one process, or as 2 MPI ranks
# of 1 thread (ddp + distributed_clip_trainer), against 1 thread, for the
# same global batch, on synthetic data with captions filling the context.
#
#   bench/ddp_scaling.sh [PRESET] [GLOBAL_BATCH] [STEPS]   (vitb32 16 3)
#
# A step's time is the second epoch's time over its STEPS steps, from the
# run's metrics.jsonl (the first epoch warms up; no state or checkpoint is
# written).  Prints samples/s per layout and the ratios.
set -eu
preset=${1:-vitb32} batch=${2:-16} steps=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
ct=${CLIPTRAIN:-$here/cliptrain}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
# the preset's context: bench fills it by default and says how long
ctx=$("$ct" bench --preset "$preset" --batch 1 --steps 1 --threads 1 |
      sed -n 's/.*"caption_tokens":\([0-9]*\).*/\1/p')
recipe() { # NAME BATCH THREADS CALLBACKS
  cat >"$tmp/$1.yaml" <<YAML
seed: 1
data: {dataset: synthetic, n_train: $((batch * steps)), n_valid: 0, batch_size: $2,
       caption_tokens: $ctx, workers: 1}
model: {preset: $preset}
fit: {epochs: 2, threads: $3}
callbacks: [$4]
YAML
}
# step_time NAME LAUNCHER...: seconds per step
step_time() {
  name=$1
  shift
  "$@" fit "$tmp/$name.yaml" --out "$tmp/$name" >"$tmp/$name.log" 2>&1 ||
    { cat "$tmp/$name.log" >&2; exit 1; }
  sed -n '2s/.*"time":\([0-9.]*\).*/\1/p' "$tmp/$name/metrics.jsonl" |
    awk -v s="$steps" '{ printf "%.4f", $1 / s }'
}
recipe t1 "$batch" 1 clip_trainer
recipe t2 "$batch" 2 clip_trainer
recipe r2 $((batch / 2)) 1 "ddp, distributed_clip_trainer"
s1=$(step_time t1 "$ct")
s2=$(step_time t2 "$ct")
sr=$(step_time r2 mpiexec --oversubscribe -np 2 "$ct")
echo "$preset, global batch $batch, captions of $ctx tokens, $steps timed steps ($(date -u +%Y-%m-%d))"
printf '%-34s %10s %10s %8s\n' layout "step s" samples/s "vs 1"
for row in "1 process, 1 thread:$s1" "1 process, 2 threads:$s2" "2 ranks x 1 thread (ddp):$sr"; do
  name=${row%:*} t=${row##*:}
  awk -v n="$name" -v t="$t" -v b="$batch" -v base="$s1" \
    'BEGIN { printf "%-34s %10.3f %10.2f %7.2fx\n", n, t, b / t, base / t }'
done
