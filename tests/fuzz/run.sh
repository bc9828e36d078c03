#!/bin/sh
# tests/fuzz/run.sh [SECONDS]: build every libFuzzer target in tests/fuzz/
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer, against the
# sources in core/'s layers directly (no configure, no libtool), then run each for
# SECONDS (default 20) from its seed corpus in tests/fuzz/corpus/TARGET
# (and its dictionary TARGET.dict, if any).
# Exits 1 when any target crashes, leaks, takes over 30 s on one input,
# runs out of memory or trips a sanitizer; the input that did it is kept
# in the build folder.  Images are limited to 4M pixels here (the library's
# limit is PIL's 179M) so that runs are spent on bugs, not on big images.
#
# Environment: CT_FUZZ_TARGETS (names, default all), CT_FUZZ_BUILD (the
# build folder, default tests/fuzz/build), CC (default clang), CT_FUZZ_JOBS
# (parallel compiles, default 2), CT_FUZZ_VOCAB (OpenAI's merges file for
# the tokenizer target).  Replay one input: tests/fuzz/build/fuzz_TARGET FILE.
set -eu

seconds=${1:-20}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${CT_FUZZ_BUILD:-$here/build}
targets=${CT_FUZZ_TARGETS:-"safetensors recipe tokenizer image csv webdataset"}
cc=${CC:-clang}
jobs=${CT_FUZZ_JOBS:-2}

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "$0: $cc not found: install clang (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
pkgs="glib-2.0 gio-2.0 json-glib-1.0 yaml-0.1 libpng libjpeg libarchive openblas"
if ! deps_cflags=$(pkg-config --cflags $pkgs) || ! deps_libs=$(pkg-config --libs $pkgs); then
  echo "$0: pkg-config cannot find one of: $pkgs" >&2
  exit 1
fi

mkdir -p "$build/obj" "$build/artifacts"
# Our own config.h: nothing here needs configure's.
cat > "$build/config.h.new" <<EOF
#define PACKAGE_VERSION "fuzz"
#define VERSION "fuzz"
EOF
cmp -s "$build/config.h.new" "$build/config.h" 2>/dev/null || mv "$build/config.h.new" "$build/config.h"
rm -f "$build/config.h.new"

warn="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 $warn $san -I$build -I$top/include -I$top/core
  -DCT_PLUGINSDIR=\"$build/plugins\" -DCT_BUILDDIR=\"$build\" -DCT_FUZZ_SRCDIR=\"$top\"
  -DCT_IMAGE_MAX_PIXELS=4000000u $deps_cflags"
export cc cflags build top

# The library objects, rebuilt when a source or any header is newer, or
# the flags changed.
if [ "$(cat "$build/flags" 2>/dev/null)" != "$cc $cflags" ]; then
  rm -f "$build"/obj/*.o
  echo "$cc $cflags" > "$build/flags"
fi
# the library's sources: every layer of core/ but the program (core/cli)
lib_sources=$(find "$top/core" -name '*.c' ! -path "$top/core/cli/*" | sort)
newest_header=$(ls -t $(find "$top/core" "$top/include/cliptrain" -name '*.h') | head -n 1)
stale=""
for src in $lib_sources; do
  obj="$build/obj/$(echo "${src#"$top"/core/}" | tr / _ | sed 's/\.c$//').o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
    stale="$stale $src"
  fi
done
if [ -n "$stale" ]; then
  echo "fuzz: compiling$(echo "$stale" | wc -w | sed 's/^ */ /') core sources with $cc"
  # shellcheck disable=SC2086
  printf '%s\n' $stale | xargs -P "$jobs" -I{} sh -c \
    'o="$build/obj/$(echo "{}" | sed "s|^$top/core/||; s|/|_|g; s|\.c\$||").o"; nice $cc $cflags -fsanitize=fuzzer-no-link -c {} -o "$o" || { rm -f "$o"; exit 1; }'
fi
rm -f "$build/libfuzzcore.a"
ar rcs "$build/libfuzzcore.a" "$build"/obj/*.o

status=0
failed=""
for t in $targets; do
  src="$here/fuzz_$t.c"
  bin="$build/fuzz_$t"
  if [ ! -f "$src" ]; then
    echo "fuzz: no target '$t' ($src)" >&2
    exit 2
  fi
  # shellcheck disable=SC2086
  nice $cc $cflags -fsanitize=fuzzer "$src" "$build/libfuzzcore.a" $deps_libs -lm -ldl -o "$bin"
  mkdir -p "$build/corpus/$t"
  dict=""
  if [ -f "$here/$t.dict" ]; then
    dict="-dict=$here/$t.dict"
  fi
  log="$build/$t.log"
  set +e
  OPENBLAS_NUM_THREADS=1 \
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    nice "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" $dict \
      "$build/corpus/$t" "$here/corpus/$t" </dev/null >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  units=$(ls "$build/corpus/$t" | wc -l)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $t: ok, ${execs:-?} runs (${rate:-?}/s) in ${seconds}s, $units new corpus files"
  else
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} runs; log $log:"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|^    #[0-9]' "$log" | head -n 30
    status=1
    failed="$failed $t"
  fi
done
if [ "$status" -ne 0 ]; then
  echo "fuzz: failed:$failed (inputs in $build/artifacts)"
fi
exit "$status"
