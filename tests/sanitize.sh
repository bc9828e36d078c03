#!/bin/sh
# sanitize.sh: the whole `make check` suite under AddressSanitizer (with
# LeakSanitizer) and UndefinedBehaviorSanitizer.
#
#   tests/sanitize.sh [BUILD_DIR]        (default: build-asan beside configure)
#
# Builds the project out of tree in BUILD_DIR with
#   -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
#   -fno-sanitize-recover=undefined
# and runs `make check` there.  When the source folder is itself configured
# (an in-tree build, as the README's commands make), a VPATH build from it
# is refused by automake, so the sources are first copied with `make
# distdir` (which also proves the tarball is complete) and built from the
# copy.
#
# Any report fails the run, twice over: a sanitized process that finds an
# error or a leak exits non-zero (ASan 1, LSan 23, UBSan aborts), which
# fails the test that ran it; and every report is also written under
# BUILD_DIR/sanitizer-logs/, which must be empty at the end, so that a
# report from a process whose exit status a test ignores still fails.
# Leaks are suppressed only where tests/lsan.supp says why (system
# libraries), nowhere in cliptrain's code.
#
# Python and Chromium (tests/torch/torch-interop.sh, tests/cli/commands.sh, report.sh)
# run as separate, uninstrumented programs that only read the files
# cliptrain wrote; none loads libcliptrain, so they need no LD_PRELOAD of
# libasan, and the sanitizers' options do not affect them.  (The one
# script that loads libcliptrain.so into Python through ctypes,
# tests/torch/check_optimizer_torch.py, is not part of make check; against this
# build it would need LD_PRELOAD=$(gcc -print-file-name=libasan.so) and
# ASAN_OPTIONS=detect_leaks=0 for the Python process alone.)
# Prints TAP-free progress; exits 0 only when everything is clean.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$srcdir/build-asan}
jobs=${CT_SANITIZE_JOBS:-2}
flags='-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined'

if [ ! -x "$srcdir/configure" ]; then
  echo "sanitize.sh: $srcdir/configure is missing; run ./autogen.sh first" >&2
  exit 2
fi
mkdir -p "$build"
build=$(cd "$build" && pwd)
src=$srcdir
if [ -f "$srcdir/config.status" ]; then
  # configured in tree: build from a distdir copy of the sources
  src=$build/src
  rm -rf "$src"
  nice make -s -C "$srcdir" distdir distdir="$src" >/dev/null
fi
obj=$build/obj
mkdir -p "$obj"
cd "$obj"
if [ ! -f Makefile ] || [ "$(sed -n 's/^abs_top_srcdir = //p' Makefile)" != "$src" ]; then
  "$src/configure" -q CFLAGS="$flags" LDFLAGS='-fsanitize=address,undefined'
fi
nice make -s -j"$jobs"

# OpenAI's vocab for the tokenizer tests: beside the checkout, as the
# in-tree build finds it (the copy in BUILD_DIR/src has no such neighbour)
if [ -z "${CT_TEST_VOCAB:-}" ] && [ -f "$srcdir/../shared/vocab/bpe_simple_vocab_16e6.txt.gz" ]; then
  CT_TEST_VOCAB=$(cd "$srcdir/../shared/vocab" && pwd)/bpe_simple_vocab_16e6.txt.gz
  export CT_TEST_VOCAB
fi
logs=$build/sanitizer-logs
rm -rf "$logs"
mkdir -p "$logs"
# G_SLICE: GLib 2.74's slice allocator would hide GLib allocations from ASan.
# Leak stacks stop at GLib (built without frame pointers); to see the
# caller, rerun the one command with ASAN_OPTIONS=fast_unwind_on_malloc=0
# (too slow for the whole suite: minutes per tokenizer load).
G_SLICE=always-malloc
G_DEBUG=gc-friendly
ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1:log_path=$logs/asan"
LSAN_OPTIONS="suppressions=$srcdir/tests/lsan.supp:print_suppressions=0"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
export G_SLICE G_DEBUG ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
status=0
nice make -j"$jobs" check || status=$?

reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
  echo "sanitize.sh: sanitizer reports:" >&2
  for f in $reports; do
    echo "==== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "sanitize.sh: FAILED (see $obj/test-suite.log and the reports above)" >&2
  exit 1
fi
echo "sanitize.sh: make check is clean under ASan, LSan and UBSan ($obj)"
