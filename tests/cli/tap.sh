# tap.sh: what the TAP shell tests share.  Source it first thing:
#   . "$(dirname "$0")/tap.sh"            (a script in tests/cli/)
#   . "$(dirname "$0")/../cli/tap.sh"     (a script in another tests/ folder)
# It sets builddir, srcdir (two folders above the script), ct (the program)
# and tmp (removed at exit), and counts tests in n; a test script ends with
# `exit $fail`.
builddir=${CT_BUILDDIR:-.}
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
ct="$builddir/cliptrain"
tmp=$(mktemp -d)
# a GLib-CRITICAL or warning must never reach a user: it aborts the command
G_DEBUG=fatal-warnings
export G_DEBUG
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
# not_ok DESCRIPTION [FILE...]: the files' last lines become comments
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  shift
  for f in "$@"; do [ -f "$f" ] && tail -n 30 "$f" | sed 's/^/# /'; done
  fail=1
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# check DESCRIPTION STATUS COMMAND...: run COMMAND (output in $tmp/out and
# $tmp/err) and compare its exit status with STATUS ("1|2" allows either)
check() {
  desc=$1 want=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  got=$?
  case "|$want|" in
  *"|$got|"*) ok "$desc" ;;
  *) not_ok "$desc (exit $got, expected $want)" "$tmp/out" "$tmp/err" ;;
  esac
}

# expect DESCRIPTION FILE PATTERN: grep -E PATTERN in FILE
expect() {
  if grep -Eq -- "$3" "$2"; then ok "$1"; else not_ok "$1: no /$3/ in $2" "$2"; fi
}

# lines DESCRIPTION FILE N: FILE has N lines
lines() {
  got=$(wc -l <"$2" 2>/dev/null || echo missing)
  if [ "$got" = "$3" ]; then ok "$1"; else not_ok "$1: $2 has $got lines, not $3" "$2"; fi
}

# run STATUS ARGS...: cliptrain ARGS, output in $tmp/out and $tmp/err;
# succeeds when the exit status is STATUS (for use inside `that`)
run() {
  want=$1
  shift
  "$ct" "$@" >"$tmp/out" 2>"$tmp/err"
  got=$?
  [ "$got" -eq "$want" ] || { echo "exit $got, expected $want" >>"$tmp/err"; return 1; }
}

# that DESCRIPTION EXPRESSION: ok when the shell expression succeeds
that() { if eval "$2"; then ok "$1"; else not_ok "$1" "$tmp/err"; fi; }

# mpi_env: what a test needs before mpiexec: Open MPI may run as root
# here, and under tests/sanitize.sh Open MPI's own leaks at exit are
# suppressed by library name (tests/lsan-mpi.supp), which needs full
# stacks and its components kept loaded; ours are still reported.  Sets
# `over` to --oversubscribe for Open MPI (the tests run 2 ranks on any
# number of cores).
mpi_env() {
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
  if [ -n "${ASAN_OPTIONS:-}" ]; then
    cat "$srcdir/tests/lsan.supp" "$srcdir/tests/lsan-mpi.supp" >"$tmp/lsan.supp"
    ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"
    LSAN_OPTIONS="suppressions=$tmp/lsan.supp:print_suppressions=0"
    OMPI_MCA_mca_base_component_disable_dlclose=1
    export ASAN_OPTIONS LSAN_OPTIONS OMPI_MCA_mca_base_component_disable_dlclose
  fi
  over=
  "$CT_MPIEXEC" --version 2>/dev/null | grep -q 'Open MPI' && over=--oversubscribe
  return 0
}
