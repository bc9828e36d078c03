#!/bin/sh
# patch-dropout.sh: cliptrain's patch dropout against PyTorch.  For two
# generated ViT cases (tests/torch/gen_clip_case.py) tests/unit/pdrop-pass
# runs a training pass under patch dropout and writes the patches it kept,
# its features, loss and gradients; tests/torch/check_patch_dropout.py runs
# an open_clip-style PyTorch tower (float64) with the same patches kept and
# compares them at the golden float32 tolerances, for several
# probabilities and variants of the pass (readout pruning off,
# checkpointing, 2 threads); other patches must not match.  Prints TAP;
# skips without python3 and torch.
. "$(dirname "$0")/../cli/tap.sh"
. "$srcdir/tests/torch/torch-python.sh"
pass="$builddir/tests/unit/pdrop-pass"
check="$srcdir/tests/torch/check_patch_dropout.py"

# compare DESCRIPTION CASE P KEY VARIANT [--other-patches]: pass then check
compare() {
  desc=$1 c=$2 p=$3 key=$4 variant=$5
  shift 5
  if "$pass" "$tmp/$c.st" "$p" 7 "$key" "$tmp/out.st" "$variant" >"$tmp/err" 2>&1 &&
    "$py" "$check" "$tmp/$c.st" "$tmp/out.st" "$@" >"$tmp/out" 2>&1; then
    ok "$desc: $(tail -n 1 "$tmp/out")"
  else
    not_ok "$desc" "$tmp/err" "$tmp/out"
  fi
}

echo "1..12"
that "a ViT case: GG 16, batch 4" \
  '"$py" "$srcdir/tests/torch/gen_clip_case.py" --seed 1 --out "$tmp/a.st" >"$tmp/err" 2>&1'
that "another: GG 36, 3 blocks, batch 5" \
  '"$py" "$srcdir/tests/torch/gen_clip_case.py" --seed 3 --batch 5 --image-resolution 48 --vision-layers 3 --out "$tmp/b.st" >"$tmp/err" 2>&1'
compare "p 0.5 matches PyTorch" a 0.5 1 fp32
compare "p 0.5, readout pruning off" a 0.5 1 no-prune
compare "p 0.5, checkpointing in 2 segments" a 0.5 1 checkpoint-2
compare "p 0.5, 2 threads" a 0.5 1 threads-2
compare "p 0.95: one patch kept" a 0.95 2 fp32
compare "p 0: every patch" a 0 3 fp32
compare "GG 36, p 0.75" b 0.75 4 fp32
compare "GG 36, p 0.75, checkpointing" b 0.75 4 checkpoint-2
compare "GG 36, p 0.3, readout pruning off" b 0.3 5 no-prune
if "$pass" "$tmp/a.st" 0.5 7 1 "$tmp/out.st" >"$tmp/err" 2>&1 &&
  ! "$py" "$check" "$tmp/a.st" "$tmp/out.st" --other-patches >"$tmp/out" 2>&1; then
  ok "other patches do not match (the check can fail)"
else
  not_ok "other patches do not match (the check can fail)" "$tmp/err" "$tmp/out"
fi
exit $fail
