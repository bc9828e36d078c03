#!/bin/sh
# torch-interop.sh: weights written by cliptrain load into PyTorch's
# load_state_dict (strict), and a case whose param.* have PyTorch's
# state_dict shapes (logit_scale 0-d) passes cliptrain's parity check.
# Prints TAP; skips when no python3 with torch is available.
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}

. "$srcdir/tests/torch/torch-python.sh"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
n=0
fail=0

# check DESCRIPTION COMMAND...: ok when COMMAND exits 0
check() {
  desc=$1
  shift
  n=$((n + 1))
  if "$@" >"$tmp/log" 2>&1; then
    echo "ok $n - $desc"
  else
    echo "not ok $n - $desc (exit $?)"
    sed 's/^/# /' "$tmp/log"
    fail=1
  fi
}

echo "1..3"
check "cliptrain init --preset tiny writes weights" \
  "$builddir/cliptrain" init --preset tiny --seed 3 --out "$tmp/w.safetensors"
check "PyTorch load_state_dict(strict=True) takes them; case written" \
  "$py" "$srcdir/tests/torch/torch_roundtrip.py" "$tmp/w.safetensors" \
  "$tmp/case.safetensors"
desc3="clip_parity passes on the case with PyTorch's state_dict shapes"
if [ -f "$tmp/case.safetensors" ]; then
  check "$desc3" "$builddir/tests/unit/clip_parity" "$tmp/case.safetensors"
else
  n=$((n + 1))
  echo "not ok $n - $desc3 (no case: test 2 wrote none)"
  fail=1
fi
exit $fail
