#!/bin/sh
# side_by_side.sh: cliptrain against PyTorch on the same machine, model,
# batch, captions and thread count, in one run.
#
#   bench/side_by_side.sh [--preset vitb32] [--batch 16] [--threads 2]
#                         [--steps 3] [--caption-tokens N] [--rounds 3]
#                         [--lean "BENCH OPTIONS"]... [--matched-only]
#
# Each round runs, one after the other: cblas_sgemm at 2048 (the ceiling),
# `cliptrain bench`, bench/torch_bench.py as Debian ships it (its default
# OpenBLAS kernels), and bench/torch_bench.py with the same kernels that
# cliptrain picks (OPENBLAS_CORETYPE).  Rounds alternate so that a noisy
# machine hurts all sides alike; the table gives the median of each figure
# over the rounds, and the ratios of those medians.
#
# "GFLOP/s done" counts the products each program runs (cliptrain skips
# some: text trimming, readout pruning); "model GFLOP/s" the model's
# FLOPs as torch_clip.py counts them, a rate proportional to samples/s.
#
# Each --lean adds a cliptrain row run with those bench options (say,
# "--checkpoint 4", a memory-lean setting, or "--whole-step") in the same
# rounds; it may be given more than once.  --matched-only skips PyTorch with Debian's kernels
# (20 s a vitb32 step here).
set -e
here=$(cd "$(dirname "$0")" && pwd)
ct=${CLIPTRAIN:-$here/../cliptrain}
py=${PYTHON:-/usr/bin/python3}
preset=vitb32 batch=16 threads=2 steps=3 cap="" rounds=3 leans="" matched_only=0
while [ $# -gt 0 ]; do
  case $1 in
  --matched-only) matched_only=1; shift; continue ;;
  --lean) leans="$leans$2
" ;;
  --preset) preset=$2 ;;
  --batch) batch=$2 ;;
  --threads) threads=$2 ;;
  --steps) steps=$2 ;;
  --caption-tokens) cap=$2 ;;
  --rounds) rounds=$2 ;;
  *) echo "side_by_side.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
capflag=""
[ -n "$cap" ] && capflag="--caption-tokens $cap"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# field NAME: a number or string from a JSON line on stdin
field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^,\"}]*\).*/\1/p"; }

core=""
for r in $(seq "$rounds"); do
  "$ct" bench --sgemm 2048 --threads "$threads" >>"$tmp/sgemm"
  "$ct" bench --preset "$preset" --batch "$batch" --threads "$threads" --steps "$steps" \
    $capflag >>"$tmp/cliptrain"
  core=$(tail -n 1 "$tmp/cliptrain" | field blas_core)
  i=0
  while IFS= read -r lean; do
    [ -n "$lean" ] || continue
    i=$((i + 1))
    # shellcheck disable=SC2086 # the options are words
    "$ct" bench --preset "$preset" --batch "$batch" --threads "$threads" --steps "$steps" \
      $capflag $lean >>"$tmp/cliptrain_lean$i"
    printf '%s\n' "$lean" >"$tmp/lean$i"
  done <<EOF
$leans
EOF
  if [ "$matched_only" = 0 ]; then
    "$py" "$here/torch_bench.py" --preset "$preset" --batch "$batch" --threads "$threads" \
      --steps "$steps" $capflag >>"$tmp/torch"
  fi
  OPENBLAS_CORETYPE=$core "$py" "$here/torch_bench.py" --preset "$preset" --batch "$batch" \
    --threads "$threads" --steps "$steps" $capflag >>"$tmp/torch_matched"
done

# median FILE FIELD
median() {
  field "$2" <"$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
sg=$(median "$tmp/sgemm" sgemm_gflop_per_s)
captions="context-filling captions"
[ -n "$cap" ] && captions="$cap-token captions"
echo "$preset, batch $batch, $threads threads, $captions, $rounds rounds, $(date -u +%Y-%m-%d)"
awk -v sg="$sg" -v c="$core" 'BEGIN { printf "sgemm 2048 (%s kernels): %.1f GFLOP/s\n", c, sg }'
echo
echo "| | samples/s | step ms | GFLOP/s done | % of sgemm | model GFLOP/s | % of sgemm | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
impls="cliptrain"
n_leans=$(ls "$tmp" | grep -c '^lean' || true)
for i in $(seq "$n_leans"); do impls="$impls cliptrain_lean$i"; done
[ "$matched_only" = 0 ] && impls="$impls torch"
impls="$impls torch_matched"
for impl in $impls; do
  case $impl in
  cliptrain) name="cliptrain ($core)" ;;
  cliptrain_lean*) name="cliptrain ($core, $(cat "$tmp/lean${impl#cliptrain_lean}"))" ;;
  torch) name="PyTorch $(field torch <"$tmp/torch" | head -n 1) (Debian's kernels)" ;;
  torch_matched) name="PyTorch, OPENBLAS_CORETYPE=$core" ;;
  esac
  s=$(median "$tmp/$impl" samples_per_s) ms=$(median "$tmp/$impl" step_ms)
  g=$(median "$tmp/$impl" gflop_per_s) m=$(median "$tmp/$impl" peak_rss_mib)
  # the model's count (PyTorch's own gflop_per_s is that already)
  mg=$g
  grep -q model_gflop_per_s "$tmp/$impl" && mg=$(median "$tmp/$impl" model_gflop_per_s)
  awk -v n="$name" -v s="$s" -v ms="$ms" -v g="$g" -v mg="$mg" -v sg="$sg" -v m="$m" \
    'BEGIN { printf "| %s | %.3f | %.0f | %.1f | %.0f%% | %.1f | %.0f%% | %.0f |\n", n, s, ms, g,
             100 * g / sg, mg, 100 * mg / sg, m }'
done
for mine in $impls; do
  case $mine in torch*) continue ;; esac
  c=$(median "$tmp/$mine" samples_per_s) cm=$(median "$tmp/$mine" peak_rss_mib)
  label=cliptrain
  case $mine in cliptrain_lean*) label="cliptrain ($(cat "$tmp/lean${mine#cliptrain_lean}"))" ;; esac
  for impl in torch torch_matched; do
    [ -s "$tmp/$impl" ] || continue
    t=$(median "$tmp/$impl" samples_per_s) tm=$(median "$tmp/$impl" peak_rss_mib)
    awk -v c="$c" -v t="$t" -v cm="$cm" -v tm="$tm" -v i="$impl" -v l="$label" 'BEGIN {
      printf "%s / %s: %.2fx the samples/s, %.2fx the peak RSS\n", l,
        i == "torch" ? "PyTorch (Debian kernels)" : "PyTorch (same kernels)", c / t, cm / tm }'
  done
done
