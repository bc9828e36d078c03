#!/bin/sh
# siglip.sh: SigLIP's sigmoid loss (ct_siglip_loss) against PyTorch:
# tests/torch/gen_siglip_case.py writes golden cases from the paper's
# definition (float64, autograd) for batches of 1, 3, 7 and 16 and a rank's
# rows against a gathered batch; tests/unit/siglip_parity checks the loss
# and the gradients of the image and text features, logit_scale and
# logit_bias, at several chunk sizes, bit-identical among themselves.
# Prints TAP; skips when no python3 with torch is available.
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}

. "$srcdir/tests/torch/torch-python.sh"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
echo "1..2"
fail=0
if "$py" "$srcdir/tests/torch/gen_siglip_case.py" --out "$tmp/cases.safetensors" >"$tmp/log" 2>&1; then
  echo "ok 1 - PyTorch wrote the SigLIP cases"
else
  echo "not ok 1 - PyTorch wrote the SigLIP cases"
  sed 's/^/# /' "$tmp/log"
  fail=1
fi
if "$builddir/tests/unit/siglip_parity" "$tmp/cases.safetensors" >"$tmp/log" 2>&1; then
  echo "ok 2 - ct_siglip_loss matches PyTorch on every case and chunk size"
  sed 's/^/# /' "$tmp/log"
else
  echo "not ok 2 - ct_siglip_loss matches PyTorch on every case and chunk size"
  sed 's/^/# /' "$tmp/log"
  fail=1
fi
exit $fail
