#!/bin/sh
# thread_scaling.sh: a training step on 1 thread against the same step on
# N threads, next to cblas_sgemm's own scaling and PyTorch's, in one run.
#
#   bench/thread_scaling.sh [--preset vitb32] [--batch 16] [--threads 2]
#                           [--steps 3] [--rounds 5] [--no-torch]
#
# Each round runs, one after the other: sgemm 2048 on 1 thread, then
# cliptrain's step, then PyTorch's (bench/torch_bench.py with the OpenBLAS
# kernels that cliptrain picks), then the same three on N threads.  The
# machine's speed drifts, and a lone busy core often runs faster than two
# (turbo), so single runs mislead: the table gives medians over the
# rounds, and the scaling of each row is the ratio of its two medians;
# a last line gives each program's scaling over sgemm's.
# sgemm's row is the ceiling a step's scaling can be held to.
set -e
here=$(cd "$(dirname "$0")" && pwd)
ct=${CLIPTRAIN:-$here/../cliptrain}
py=${PYTHON:-/usr/bin/python3}
preset=vitb32 batch=16 threads=2 steps=3 rounds=5 torch=1
while [ $# -gt 0 ]; do
  case $1 in
  --no-torch) torch=0; shift; continue ;;
  --preset) preset=$2 ;;
  --batch) batch=$2 ;;
  --threads) threads=$2 ;;
  --steps) steps=$2 ;;
  --rounds) rounds=$2 ;;
  *) echo "thread_scaling.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
$py -c "import torch" 2>/dev/null || torch=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# field NAME: a number or string from a JSON line on stdin
field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
# median FILE FIELD
median() {
  field "$2" <"$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

core=""
for r in $(seq "$rounds"); do
  for t in 1 "$threads"; do
    "$ct" bench --sgemm 2048 --threads "$t" >>"$tmp/sgemm.$t"
    "$ct" bench --preset "$preset" --batch "$batch" --threads "$t" --steps "$steps" \
      >>"$tmp/cliptrain.$t"
    core=$(tail -n 1 "$tmp/cliptrain.$t" | field blas_core)
    if [ "$torch" = 1 ]; then
      OPENBLAS_CORETYPE=$core "$py" "$here/torch_bench.py" --preset "$preset" --batch "$batch" \
        --threads "$t" --steps "$steps" >>"$tmp/torch.$t"
    fi
  done
done

echo "$preset, batch $batch, 1 against $threads threads, $rounds rounds, $(date -u +%Y-%m-%d)"
echo
echo "| | 1 thread | $threads threads | scaling |"
echo "| --- | --- | --- | --- |"
row() { # NAME FILE FIELD UNIT
  a=$(median "$tmp/$2.1" "$3") b=$(median "$tmp/$2.$threads" "$3")
  awk -v n="$1" -v a="$a" -v b="$b" -v u="$4" \
    'BEGIN { printf "| %s | %.4g %s | %.4g %s | %.2fx |\n", n, a, u, b, u, b / a }'
}
row "cblas_sgemm 2048 ($core kernels)" sgemm sgemm_gflop_per_s GFLOP/s
row "cliptrain" cliptrain samples_per_s samples/s
[ "$torch" = 1 ] && row "PyTorch, OPENBLAS_CORETYPE=$core" torch samples_per_s samples/s
# A lone core's speed moves a lot on shared machines, and it moves sgemm's
# scaling as much as a step's: the step's scaling against sgemm's in the
# same rounds is the steadier figure.
ratio() { # FILE FIELD: scaling of FILE's FIELD over sgemm's
  awk -v a="$(median "$tmp/$1.1" "$2")" -v b="$(median "$tmp/$1.$threads" "$2")" \
    -v sa="$(median "$tmp/sgemm.1" sgemm_gflop_per_s)" \
    -v sb="$(median "$tmp/sgemm.$threads" sgemm_gflop_per_s)" \
    'BEGIN { printf "%.2f", (b / a) / (sb / sa) }'
}
echo
echo "cliptrain's scaling is $(ratio cliptrain samples_per_s) of sgemm's in the same rounds"
[ "$torch" = 1 ] && echo "PyTorch's scaling is $(ratio torch samples_per_s) of sgemm's in the same rounds"
exit 0
