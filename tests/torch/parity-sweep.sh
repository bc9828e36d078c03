#!/bin/bash
# parity-sweep.sh [N [SEED [JOBS]]]: N random CLIP shapes against PyTorch.
#
# Case i (0 <= i < N) has seed SEED + i; even seeds draw a ViT image
# tower, odd ones a ModifiedResNet (tests/torch/gen_clip_case.py --random: the
# ranges are in its random_config docstring).  For each case PyTorch
# (float64) writes the case and its images as PNGs; for a ResNet,
# tests/unit/clip_parity --dump-masks records which ReLU units cliptrain's
# float32 pass puts above 0, and the case is written again with the
# reference following that pattern (gen_clip_case.py's read_masks says
# why).  tests/unit/clip_parity then runs every variant of the pass (fp32,
# readout pruning off, 2 threads, checkpointing in 1-3 chunks, bf16,
# fp16, a ResNet's eval mode) and `cliptrain embed` on the case's model
# and PNGs is compared with PyTorch's eval-mode features.
#
# Without arguments: the fixed set that make check runs, 16 cases from
# seed 1 (8 a tower).  JOBS (default 2) cases run at once.  Prints TAP,
# one test a case, and closes with "N passed, N failed"; a failing case
# names its configuration and the command that regenerates it.  Skips
# when no python3 with torch is available.  Set CT_SWEEP_KEEP=DIR to keep
# the cases.
n=${1:-16}
seed0=${2:-1}
jobs=${3:-2}
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}

if [ "$1" = --one ]; then
  # worker: --one SEED DIR; writes DIR/SEED.tap and DIR/SEED.log
  s=$2 dir=$3 py=$4
  tower=vit
  [ $((s % 2)) = 1 ] && tower=resnet
  c=$dir/case-$s.safetensors log=$dir/$s.log
  gen() { "$py" "$srcdir/tests/torch/gen_clip_case.py" --random $tower --seed "$s" --out "$c" --torch-f32 \
    --png-dir "$dir/png-$s" "$@" >>"$log" 2>&1; }
  fail() {
    echo "not ok - $tower seed $s: $1" >"$dir/$s.tap"
    sed 's/^/# /' "$log" >>"$dir/$s.tap"
    exit 0
  }
  gen || fail "PyTorch could not write the case"
  if [ $tower = resnet ]; then
    "$builddir/tests/unit/clip_parity" --dump-masks "$dir/masks-$s" "$c" >>"$log" 2>&1 ||
      fail "clip_parity --dump-masks failed"
    gen --masks "$dir/masks-$s" || fail "PyTorch could not write the masked case"
  fi
  "$builddir/tests/unit/clip_parity" --save-model "$dir/model-$s.safetensors" "$c" >>"$log" 2>&1 ||
    fail "clip_parity --save-model failed"
  "$builddir/cliptrain" embed -m "$dir/model-$s.safetensors" -i "$dir/png-$s" \
    -o "$dir/embed-$s.safetensors" >>"$log" 2>&1 || fail "cliptrain embed failed"
  "$builddir/tests/unit/clip_parity" -k --embed "$dir/embed-$s.safetensors" "$c" >"$dir/$s.out" 2>&1
  rc=$?
  what=$(sed -n 's/.*(\(seed [0-9]*, batch.*\)).*/\1/p' "$log" | tail -1)
  if [ $rc = 0 ] && ! grep -q '^not ok' "$dir/$s.out"; then
    worst=$(sed -n 's/.*\[fp32\]: worst error \/ tolerance \([^ ]*\).*/\1/p' "$dir/$s.out")
    flips=$(sed -n 's/.*: \([0-9]*\) ReLU units on the other side.*/\1/p' "$dir/$s.out")
    echo "ok - $tower $what; fp32 worst error/tolerance $worst${flips:+, $flips ReLU flips}" \
      >"$dir/$s.tap"
  else
    echo "not ok - $tower $what" >"$dir/$s.tap"
    # clip_parity's own TAP lines become comments: only this script's count
    grep -v '^ok\|^# Start\|^# End\|^# random seed\|^1\.\.' "$dir/$s.out" |
      sed 's/^\([^#]\)/# \1/' >>"$dir/$s.tap"
    echo "# regenerate: tests/torch/gen_clip_case.py --random $tower --seed $s --out CASE" \
      "(ResNet: then clip_parity --dump-masks M CASE and again with --masks M)" >>"$dir/$s.tap"
  fi
  [ -n "$CT_SWEEP_KEEP" ] || rm -rf "$c" "$dir/png-$s" "$dir/masks-$s" "$dir/model-$s.safetensors" \
    "$dir/embed-$s.safetensors"
  exit 0
fi

. "$srcdir/tests/torch/torch-python.sh"
case "$n$seed0$jobs" in
  *[!0-9]*) echo "usage: parity-sweep.sh [N [SEED [JOBS]]]" >&2; exit 2 ;;
esac

if [ -n "$CT_SWEEP_KEEP" ]; then
  tmp=$CT_SWEEP_KEEP
  mkdir -p "$tmp" || exit 1
else
  tmp=$(mktemp -d) || exit 1
  trap 'rm -rf "$tmp"' EXIT
fi
trap 'exit 1' HUP INT TERM
start=$(date +%s)
seq "$seed0" $((seed0 + n - 1)) |
  xargs -P "$jobs" -I{} bash "$0" --one {} "$tmp" "$py"
echo "1..$n"
pass=0 failed=0 i=0
for s in $(seq "$seed0" $((seed0 + n - 1))); do
  i=$((i + 1))
  if [ ! -f "$tmp/$s.tap" ]; then
    echo "not ok $i - seed $s: no result"
    failed=$((failed + 1))
    continue
  fi
  sed "1s/^\(not \)\{0,1\}ok -/&/; 1s/^ok -/ok $i -/; 1s/^not ok -/not ok $i -/" "$tmp/$s.tap"
  if head -1 "$tmp/$s.tap" | grep -q '^ok'; then pass=$((pass + 1)); else failed=$((failed + 1)); fi
done
echo "# $n cases from seed $seed0 in $(($(date +%s) - start)) s"
echo "$pass passed, $failed failed"
[ $failed = 0 ]
