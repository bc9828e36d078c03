#!/bin/sh
# run-lock.sh: one run at a time in a run folder.  Two fits started at once
# on one --out, or two --resume of one folder: one runs, the other is
# refused in one line naming the first's PID (exit 1) and touches nothing.
# The lock (OUT/.lock) goes with its run: a finished run, a run that failed
# before its first step and a killed one leave nothing that blocks the
# folder.  Uses tests/plugins/fault.so (slow_ms keeps the first run going).
# Prints TAP.
. "$(dirname "$0")/tap.sh"
plugins=${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}
check_run="$builddir/tests/unit/check-run"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

echo "1..11"
if [ ! -f "$plugins/fault.so" ]; then
  for i in 1 2 3 4 5 6 7 8 9 10 11; do skip "tests/plugins/fault.so is not built ($plugins)"; done
  exit 0
fi

# 16 training steps of 200 ms at least: the second run surely comes while
# the first runs
cat >"$tmp/r.yaml" <<EOF
seed: 5
model: {preset: tiny}
data: {dataset: synthetic, n_train: 128, n_valid: 16, batch_size: 8}
fit: {epochs: 2, threads: 1}
plugin_path: [$plugins]
callbacks: [clip_trainer, {fault: {slow_ms: 200}}]
EOF

# both ARGS...: two `cliptrain fit ARGS` started at once: PIDs $pa $pb,
# exit statuses $sa $sb, stderr in $tmp/a.err and $tmp/b.err
both() {
  "$ct" fit "$@" >"$tmp/a.out" 2>"$tmp/a.err" &
  pa=$!
  "$ct" fit "$@" >"$tmp/b.out" 2>"$tmp/b.err" &
  pb=$!
  wait $pa
  sa=$?
  wait $pb
  sb=$?
}
# refused DIR: one of the two ran (exit 0), the other exited 1 with one
# line naming DIR and the PID of the one that ran
refused() {
  if [ $sa -eq 0 ] && [ $sb -eq 1 ]; then win=$pa lose=b
  elif [ $sb -eq 0 ] && [ $sa -eq 1 ]; then win=$pb lose=a
  else
    cat "$tmp/a.err" "$tmp/b.err" >"$tmp/err"
    echo "exit statuses $sa and $sb" >>"$tmp/err"
    return 1
  fi
  cp "$tmp/$lose.err" "$tmp/err"
  [ "$(wc -l <"$tmp/$lose.err")" -eq 1 ] &&
    grep -q "cliptrain: $1 is in use by another run (process $win holds $1/.lock); wait for it to end or choose another folder" "$tmp/$lose.err"
}

both "$tmp/r.yaml" --out "$tmp/one"
that "two fits on one --out at once: one runs, the other exits 1 naming its PID" 'refused "$tmp/one"'
that "the folder holds the one run: 2 rows in metrics.jsonl, every file whole" \
  '[ "$(wc -l <"$tmp/one/metrics.jsonl")" -eq 2 ] && [ -s "$tmp/one/finished.json" ] && "$check_run" "$tmp/one" >"$tmp/err" 2>&1'
that "the lock goes with the run that ended" '[ ! -e "$tmp/one/.lock" ] && ! grep -q "\.lock" "$tmp/one/finished.json"'

# a second fit while the first is well under way leaves its files as they are
"$ct" fit "$tmp/r.yaml" --out "$tmp/two" >"$tmp/a.out" 2>"$tmp/a.err" &
pa=$!
i=0
while [ ! -s "$tmp/two/manifest.json" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
sums() { cat "$tmp/two/recipe.yaml" "$tmp/two/manifest.json" "$tmp/two/.lock" | cksum; }
before=$(sums)
that "a second fit on a running run's folder exits 1 naming the first's PID" \
  'run 1 fit "$tmp/r.yaml" --out "$tmp/two" && grep -q "process $pa holds" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
that "and leaves its recipe.yaml, manifest.json and lock as they were" '[ "$(sums)" = "$before" ]'
wait $pa
that "while the first runs to its end" '[ $? -eq 0 ] && [ "$(wc -l <"$tmp/two/metrics.jsonl")" -eq 2 ]'

# two resumes of one stopped run
run 0 fit "$tmp/r.yaml" --stop-after 3 --out "$tmp/res"
both --resume "$tmp/res"
that "two --resume of one folder at once: one runs, the other exits 1 naming its PID" \
  'refused "$tmp/res"'
that "the resumed run's metrics.jsonl has its 2 rows, equal to those of a run never stopped" \
  'losses "$tmp/one" >"$tmp/x" && losses "$tmp/res" >"$tmp/y" && cmp -s "$tmp/x" "$tmp/y"'

# a run that fails before its first step removes its folder, lock included
sed 's/slow_ms: 200/fail_event: before_fit/' "$tmp/r.yaml" >"$tmp/f.yaml"
mkdir "$tmp/there"
that "a run that fails before its first step leaves no folder and no lock" \
  'run 1 fit "$tmp/f.yaml" --out "$tmp/gone" && [ ! -e "$tmp/gone" ] && run 1 fit "$tmp/f.yaml" --out "$tmp/there" && [ -z "$(ls -A "$tmp/there")" ]'

# SIGKILL leaves a stale .lock, which the kernel no longer holds
sed 's/epochs: 2, threads: 1/epochs: 2, threads: 1, save_state_every: 2/' "$tmp/r.yaml" >"$tmp/k.yaml"
"$ct" fit "$tmp/k.yaml" --out "$tmp/k" >/dev/null 2>&1 &
pk=$!
i=0
while [ ! -s "$tmp/k/state.safetensors" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL $pk
wait $pk
that "a killed run's stale lock blocks neither --resume" \
  '[ -e "$tmp/k/.lock" ] && run 0 fit --resume "$tmp/k" && [ -s "$tmp/k/finished.json" ] && [ ! -e "$tmp/k/.lock" ]'
that "a new run there is refused for the run it holds, not for the stale lock" \
  'run 1 fit "$tmp/k.yaml" --out "$tmp/k" && grep -q "already holds a run" "$tmp/err"'
exit $fail
