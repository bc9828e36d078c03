#!/bin/sh
# torch-resnet.sh: fixed ResNet shapes against PyTorch, made here by
# tests/torch/gen_clip_case.py (bench/torch_clip.py's OpenAI ModifiedResNet,
# float64):
#   - stages 2,1,1,2, 96 px (a 3x3 final grid), 2 pool heads, batch 3;
#   - the three shapes a report of wrong ResNet gradients named: stages 2,1,2,1
#     width 12 at 96 px batch 4; 3,3,2,2 width 8 at 64 px batch 6;
#     2,3,1,3 width 12 at 32 px (1x1 maps) batch 4.
# Shapes like these fail a float32 pass against a float64 reference for
# no fault of either when a ReLU unit lies within float32 rounding of 0
# or a BatchNorm channel sees a few values, so, as tests/torch/parity-sweep.sh
# does, each is written again with cliptrain's ReLU patterns forced into
# the reference (clip_parity --dump-masks, gen_clip_case.py --masks) and
# with PyTorch float32's own error (--torch-f32) as the yardstick where it
# exceeds the golden tolerances.  tests/unit/clip_parity then checks features,
# logits, loss, every gradient and the running statistics, and every
# variant of the pass.  Prints TAP; skips when no python3 with torch is available.
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}

. "$srcdir/tests/torch/torch-python.sh"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
text="--embed-dim 24 --context-length 10 --vocab-size 300 --transformer-width 32 \
  --transformer-heads 2 --transformer-layers 1 --vision-patch-size 0"
echo "1..8"
n=0
# case NAME MASKED SEED BATCH LAYERS WIDTH HEADS RESOLUTION
case_() {
  name=$1 masked=$2
  opts="--seed $3 --batch $4 --vision-layers $5 --vision-width $6 --vision-heads $7 \
    --image-resolution $8 $text"
  c=$tmp/$name.safetensors
  n=$((n + 1))
  # shellcheck disable=SC2086
  if ! "$py" "$srcdir/tests/torch/gen_clip_case.py" --out "$c" $opts >"$tmp/log" 2>&1; then
    echo "not ok $n - PyTorch wrote the $name case"
    sed 's/^/# /' "$tmp/log"
    n=$((n + 1))
    echo "not ok $n - clip_parity on it (no case)"
    return
  fi
  if [ "$masked" = masked ]; then
    # shellcheck disable=SC2086
    if ! "$builddir/tests/unit/clip_parity" --dump-masks "$tmp/$name.masks" "$c" >"$tmp/log" 2>&1 ||
      ! "$py" "$srcdir/tests/torch/gen_clip_case.py" --out "$c" $opts --torch-f32 \
        --masks "$tmp/$name.masks" >"$tmp/log" 2>&1; then
      echo "not ok $n - PyTorch wrote the $name case with cliptrain's ReLU patterns"
      sed 's/^/# /' "$tmp/log"
      n=$((n + 1))
      echo "not ok $n - clip_parity on it (no case)"
      return
    fi
  fi
  echo "ok $n - PyTorch wrote the $name case ($opts)" | tr -s ' '
  n=$((n + 1))
  if "$builddir/tests/unit/clip_parity" -k "$c" >"$tmp/log" 2>&1 && ! grep -q '^not ok' "$tmp/log"; then
    echo "ok $n - clip_parity passes on $name"
    grep 'worst error\|ReLU units' "$tmp/log"
  else
    echo "not ok $n - clip_parity passes on $name"
    sed 's/^/# /' "$tmp/log"
  fi
}
case_ rn-2112 plain 7 3 2,1,1,2 8 2 96
case_ report-a masked 1 4 2,1,2,1 12 6 96
case_ report-b masked 2 6 3,3,2,2 8 4 64
case_ report-c masked 3 4 2,3,1,3 12 6 32
