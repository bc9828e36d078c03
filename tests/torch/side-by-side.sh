#!/bin/sh
# side-by-side.sh: a smoke run of bench/side_by_side.sh on the tiny preset
# (the benchmark itself is run by hand; see the README).  Prints TAP.
. "$(dirname "$0")/../cli/tap.sh"
echo "1..6"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  that "side_by_side.sh runs both sides" 'CLIPTRAIN="$ct" sh "$srcdir/bench/side_by_side.sh" --preset tiny --batch 4 --steps 1 --rounds 1 >"$tmp/t" 2>"$tmp/err"'
  that "and prints the table and the ratios; PyTorch's two GFLOP/s columns agree, cliptrain does less work than its model count (readout pruning)" 'grep -q "^| cliptrain (" "$tmp/t" && grep -q "^| PyTorch" "$tmp/t" && grep -q "sgemm 2048" "$tmp/t" && grep -q "x the samples/s" "$tmp/t" && awk -F"|" "\$0 ~ /^[|] PyTorch/ { n++; if (\$5 + 0 != \$7 + 0 || \$7 + 0 <= 0) bad = 1 } \$0 ~ /^[|] cliptrain [(][^,]*[)] [|]/ { c++; if (!(\$7 + 0 > \$5 + 0)) bad = 1 } END { exit bad || n != 2 || c != 1 }" "$tmp/t" || { cat "$tmp/t" >>"$tmp/err"; false; }'
  that "each --lean adds a cliptrain row with those options, --matched-only drops Debian's PyTorch" 'CLIPTRAIN="$ct" sh "$srcdir/bench/side_by_side.sh" --preset tiny --batch 4 --steps 1 --rounds 1 --matched-only --lean "--checkpoint 2 --optimizer-state bf16" --lean "--whole-step" >"$tmp/t2" 2>"$tmp/err" && grep -q "^| cliptrain (.*, --checkpoint 2 --optimizer-state bf16) |" "$tmp/t2" && grep -q "^| cliptrain (.*, --whole-step) |" "$tmp/t2" && ! grep -q "Debian" "$tmp/t2" && grep -q "^cliptrain (--checkpoint 2 --optimizer-state bf16) / PyTorch (same kernels)" "$tmp/t2" && grep -q "^cliptrain (--whole-step) / PyTorch (same kernels)" "$tmp/t2" || { cat "$tmp/t2" >>"$tmp/err"; false; }'
  that "thread_scaling.sh runs 1 and 2 threads of cliptrain, sgemm and PyTorch, and each one's scaling over sgemm's" 'CLIPTRAIN="$ct" sh "$srcdir/bench/thread_scaling.sh" --preset tiny --batch 4 --steps 1 --rounds 1 >"$tmp/t3" 2>"$tmp/err" && grep -q "^| cblas_sgemm 2048 (.* kernels) | [0-9.]* GFLOP/s | [0-9.]* GFLOP/s | [0-9.]*x |" "$tmp/t3" && grep -q "^| cliptrain | [0-9.]* samples/s | [0-9.]* samples/s | [0-9.]*x |" "$tmp/t3" && grep -q "^| PyTorch, OPENBLAS_CORETYPE=" "$tmp/t3" && grep -q "^cliptrain.s scaling is [0-9.]* of sgemm.s in the same rounds$" "$tmp/t3" || { cat "$tmp/t3" >>"$tmp/err"; false; }'
  that "--no-torch leaves PyTorch out, and a bad option is refused" 'CLIPTRAIN="$ct" sh "$srcdir/bench/thread_scaling.sh" --preset tiny --batch 2 --steps 1 --rounds 1 --no-torch >"$tmp/t4" 2>"$tmp/err" && ! grep -q PyTorch "$tmp/t4" && ! CLIPTRAIN="$ct" sh "$srcdir/bench/thread_scaling.sh" --bogus 1 2>>"$tmp/err"'
  that "torch_bench.py runs OpenBLAS on --threads threads, not on every core" '/usr/bin/python3 "$srcdir/bench/torch_bench.py" --preset tiny --batch 2 --steps 1 --threads 1 >"$tmp/t5" 2>"$tmp/err" && grep -q "\"threads\": 1, \"blas_threads\": 1," "$tmp/t5" || { cat "$tmp/t5" >>"$tmp/err"; false; }'
else
  for i in 1 2 3 4 5 6; do skip "python3-torch is not installed"; done
fi
exit $fail
