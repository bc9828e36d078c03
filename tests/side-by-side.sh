#!/bin/sh
# side-by-side.sh: a smoke run of bench/side_by_side.sh on the tiny preset
# (the benchmark itself is run by hand; see the README).  Prints TAP.
. "$(dirname "$0")/tap.sh"
echo "1..3"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  that "side_by_side.sh runs both sides" 'CLIPTRAIN="$ct" sh "$srcdir/bench/side_by_side.sh" --preset tiny --batch 4 --steps 1 --rounds 1 >"$tmp/t" 2>"$tmp/err"'
  that "and prints the table and the ratios" 'grep -q "^| cliptrain (" "$tmp/t" && grep -q "^| PyTorch" "$tmp/t" && grep -q "sgemm 2048" "$tmp/t" && grep -q "x the samples/s" "$tmp/t" || { cat "$tmp/t" >>"$tmp/err"; false; }'
  that "--lean adds a cliptrain row with those options, --matched-only drops Debian's PyTorch" 'CLIPTRAIN="$ct" sh "$srcdir/bench/side_by_side.sh" --preset tiny --batch 4 --steps 1 --rounds 1 --matched-only --lean "--checkpoint 2 --optimizer-state bf16" >"$tmp/t2" 2>"$tmp/err" && grep -q "^| cliptrain (.*, --checkpoint 2 --optimizer-state bf16) |" "$tmp/t2" && ! grep -q "Debian" "$tmp/t2" && grep -q "^cliptrain (--checkpoint 2 --optimizer-state bf16) / PyTorch (same kernels)" "$tmp/t2" || { cat "$tmp/t2" >>"$tmp/err"; false; }'
else
  skip "python3-torch is not installed"
  skip "python3-torch is not installed"
  skip "python3-torch is not installed"
fi
exit $fail
