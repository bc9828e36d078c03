#!/bin/sh
# torch-resnet.sh: a second ResNet shape against PyTorch.  The case is
# made here by tests/gen_clip_case.py (bench/torch_clip.py's OpenAI
# ModifiedResNet, float64): 2, 1, 1, 2 blocks per stage (identity
# shortcuts in layer1 and layer4), 96 px (a 3x3 final grid), 2 pool heads,
# batch 3; tests/clip_parity checks features, logits, loss, every gradient
# and the running statistics within the golden tolerances.  Prints TAP;
# skips when no python3 with torch is available.
srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}

py=
for cand in /usr/bin/python3 python3; do
  if "$cand" -c 'import torch, numpy' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
if [ -z "$py" ]; then
  echo "1..0 # SKIP python3 with torch is not installed"
  exit 0
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
echo "1..2"
if "$py" "$srcdir/tests/gen_clip_case.py" --out "$tmp/rn.safetensors" --seed 7 --batch 3 \
  --vision-layers 2,1,1,2 --vision-patch-size 0 --vision-width 8 --vision-heads 2 \
  --image-resolution 96 --embed-dim 24 --context-length 10 --vocab-size 300 \
  --transformer-width 32 --transformer-heads 2 --transformer-layers 1 >"$tmp/log" 2>&1; then
  echo "ok 1 - PyTorch wrote a ResNet case (stages 2,1,1,2, 96 px, batch 3)"
else
  echo "not ok 1 - PyTorch wrote a ResNet case"
  sed 's/^/# /' "$tmp/log"
  echo "not ok 2 - clip_parity on it (no case)"
  exit 1
fi
if "$builddir/tests/clip_parity" "$tmp/rn.safetensors" >"$tmp/log" 2>&1; then
  echo "ok 2 - clip_parity passes on it"
  grep 'worst error' "$tmp/log"
else
  echo "not ok 2 - clip_parity passes on it"
  sed 's/^/# /' "$tmp/log"
  exit 1
fi
