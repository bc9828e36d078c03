#!/bin/sh
# cli.sh: the cliptrain program's commands, exit statuses and error lines.
# Prints TAP.
. "$(dirname "$0")/tap.sh"

# one_line DESCRIPTION: the last command wrote exactly one line to stderr
one_line() {
  n=$((n + 1))
  if [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
    echo "ok $n - $1"
  else
    echo "not ok $n - $1: stderr has $(wc -l <"$tmp/err") lines"
    sed 's/^/# /' "$tmp/err"
    fail=1
  fi
}

echo "1..22"
check "--version" 0 "$ct" --version
expect "--version names the program" "$tmp/out" '^cliptrain [0-9]+\.[0-9]+\.[0-9]+$'
check "--help" 0 "$ct" --help
expect "--help lists bench" "$tmp/out" 'bench'
check "no command is bad usage" 2 "$ct"
check "unknown command is bad usage" 2 "$ct" frobnicate
one_line "unknown command: one error line"
expect "unknown command is named" "$tmp/err" "unknown command 'frobnicate'"

check "bench on the tiny preset" 0 "$ct" bench --preset tiny --batch 4 --steps 2 --threads 1
for field in preset batch threads samples_per_s step_ms gflop_per_s peak_rss_mib; do
  expect "bench prints $field" "$tmp/out" "\"$field\":"
done
check "bench with an unknown preset" 2 "$ct" bench --preset vitb99
one_line "unknown preset: one error line"
check "bench with --batch 0" 2 "$ct" bench --preset tiny --batch 0
check "init writes weights" 0 "$ct" init --preset tiny --seed 1 --out "$tmp/w.safetensors"
check "init into a missing folder fails" 1 "$ct" init --preset tiny --out "$tmp/no/such/dir/w.safetensors"
expect "the error names the file" "$tmp/err" "no/such/dir/w.safetensors"
exit $fail
