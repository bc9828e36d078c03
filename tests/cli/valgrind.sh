#!/bin/sh
# valgrind.sh: one short fit of recipes/synthetic.yaml (tiny preset, three
# steps, stopped with a training state, save_model and csv_logger on) and
# its resume, under valgrind --leak-check=full: no invalid access, no use
# of uninitialised memory, no leak (tests/valgrind.supp lists the system
# libraries' own, each with its reason).  Skipped, and reported as
# skipped, without valgrind or on a sanitizer build.  Prints TAP.
. "$(dirname "$0")/tap.sh"
echo "1..3"
bin="$builddir/.libs/cliptrain"
[ -x "$bin" ] || bin="$ct"
if ! command -v valgrind >/dev/null 2>&1; then
  for i in 1 2 3; do skip "valgrind is not installed (Debian package valgrind)"; done
  exit 0
fi
if ldd "$bin" 2>/dev/null | grep -q 'libasan\|libubsan'; then
  for i in 1 2 3; do skip "this build uses the sanitizers, which valgrind cannot run with"; done
  exit 0
fi
# vg NAME ARGS...: cliptrain ARGS under valgrind, its report in $tmp/NAME.vg
vg() {
  name=$1
  shift
  # valgrind's CPU has no AVX-512: name OpenBLAS's kernels, so that cliptrain
  # does not re-execute itself to pick them; GLib's slice allocator off, so
  # that its blocks are real allocations
  OPENBLAS_CORETYPE=Haswell G_SLICE=always-malloc \
    "$builddir/libtool" --mode=execute valgrind -q --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite,possible \
    --suppressions="$srcdir/tests/valgrind.supp" --log-file="$tmp/$name.vg" \
    "$ct" "$@" >"$tmp/out" 2>"$tmp/err"
}
cbs='callbacks=[clip_trainer, {save_model: {at_end: true, fname: final}}, csv_logger]'
vg fit fit "$srcdir/recipes/synthetic.yaml" --set "$cbs" --set data.n_train=32 \
  --stop-after 3 --out "$tmp/run"
st=$?
that "a fit stopped after 3 steps is clean under valgrind (exit $st)" \
  '[ $st -eq 0 ] && [ ! -s "$tmp/fit.vg" ] || { cat "$tmp/fit.vg" >>"$tmp/err"; false; }'
vg resume fit --resume "$tmp/run"
st=$?
that "its resume to the end is clean too (exit $st)" \
  '[ $st -eq 0 ] && [ ! -s "$tmp/resume.vg" ] || { cat "$tmp/resume.vg" >>"$tmp/err"; false; }'
that "and wrote the final weights" '[ -s "$tmp/run/final.safetensors" ]'
exit $fail
