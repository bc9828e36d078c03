#!/bin/sh
# signals.sh: the signals a fit meets on a cluster or in a pipe, and
# plugins that crash.  SIGHUP stops a run as SIGTERM does; SIGUSR1 and
# SIGUSR2 save a training state and the run goes on; a closed stdout
# (`| head -1`) or a full one never stops a run and is said once in
# log.txt; a plugin that segfaults, aborts or calls exit(0) is named with
# its event and step, the status staying 139 and 134 (1 for exit).  Uses
# tests/plugins/fault.so.  Prints TAP.
. "$(dirname "$0")/tap.sh"
plugins=${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}
check_run="$builddir/tests/unit/check-run"

# recipe NAME FAULT_PARAMS [FIT_KEYS] [N_TRAIN]: write $tmp/NAME.yaml
recipe() {
  cat >"$tmp/$1.yaml" <<EOF
seed: 3
model: {preset: tiny}
data: {dataset: synthetic, n_train: ${4:-64}, n_valid: 16, batch_size: 8}
fit: {epochs: 2, threads: 1${3:+, $3}}
plugin_path: [$plugins]
callbacks: [clip_trainer, {fault: {$2}}]
EOF
}
# wait_for FILE PATTERN: until FILE has a line matching PATTERN (20 s at most)
wait_for() {
  i=0
  while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
}
# start NAME DIR: the fit of $tmp/NAME.yaml into DIR in the background
# ($pid), once it has begun training
start() {
  "$ct" fit "$tmp/$1.yaml" --out "$2" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  i=0
  while [ ! -s "$2/manifest.json" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
  sleep 0.5
}

echo "1..16"
if [ ! -f "$plugins/fault.so" ]; then
  i=0; while [ $i -lt 16 ]; do skip "tests/plugins/fault.so is not built ($plugins)"; i=$((i + 1)); done
  exit 0
fi

# ---------------------------------------------------------------- SIGHUP
recipe slow "slow_ms: 300" "" 6000
start slow "$tmp/hup"
kill -HUP $pid
wait $pid
st=$?
that "SIGHUP stops the run after its step, saves the state and exits 0, as SIGTERM" \
  '[ $st -eq 0 ] && grep -q "SIGHUP: stopping after this step" "$tmp/err" && grep -q "continue with: cliptrain fit --resume $tmp/hup" "$tmp/err" && "$check_run" "$tmp/hup" >/dev/null'
# steps of 2 s, so that the second signal surely comes while the first
# waits for the step to end, however loaded the machine
recipe slower "slow_ms: 2000" "" 6000
start slower "$tmp/hup2"
kill -HUP $pid
wait_for "$tmp/err" "SIGHUP: stopping"
kill -HUP $pid
wait $pid
st=$?
that "a second SIGHUP quits at once: exit 129, saying so" \
  '[ $st -eq 129 ] && grep -q "SIGHUP again: quitting at once" "$tmp/err"'

# ---------------------------------------------------------------- SIGUSR1, SIGUSR2
start slow "$tmp/usr"
kill -USR1 $pid
wait_for "$tmp/err" "SIGUSR1: saved"
that "SIGUSR1 saves a training state after the step, in one line" \
  'grep -q "^cliptrain: SIGUSR1: saved the training state after step [0-9]* in $tmp/usr/state.safetensors; training goes on$" "$tmp/err" && "$check_run" "$tmp/usr" >/dev/null'
sleep 0.7
that "and the run goes on" 'kill -0 $pid && [ ! -e "$tmp/usr/finished.json" ]'
saved=$(sed -n 's/.*SIGUSR1: saved the training state after step \([0-9]*\).*/\1/p' "$tmp/err")
kill -USR2 $pid
wait_for "$tmp/err" "SIGUSR2: saved"
that "SIGUSR2 does the same, at a later step" \
  'later=$(sed -n "s/.*SIGUSR2: saved the training state after step \([0-9]*\).*/\1/p" "$tmp/err") && [ "$later" -gt "$saved" ] && kill -0 $pid'
kill -KILL $pid
wait $pid 2>/dev/null
that "the state saved resumes after a SIGKILL" \
  'later=$(sed -n "s/.*SIGUSR2: saved the training state after step \([0-9]*\).*/\1/p" "$tmp/err") && run 0 fit --resume "$tmp/usr" --stop-after $((later + 1)) && grep -q "stopped after $((later + 1)) training steps" "$tmp/err"'

# ---------------------------------------------------------------- broken outputs
recipe pipe "slow_ms: 50"
{ "$ct" fit "$tmp/pipe.yaml" --out "$tmp/pipe" 2>"$tmp/err"; echo $? >"$tmp/st"; } | head -1 >/dev/null
that "a fit piped into head -1 is not killed by SIGPIPE: it runs to its end, exit 0" \
  '[ "$(cat "$tmp/st")" -eq 0 ] && [ -s "$tmp/pipe/finished.json" ]'
that "the closed stdout is said once, in log.txt and on stderr" \
  '[ "$(wc -l <"$tmp/pipe/log.txt")" -eq 1 ] && grep -q "cliptrain: writing to stdout failed by training step [0-9]* (its reader closed the pipe); what the run prints there is lost from now on, and training goes on" "$tmp/pipe/log.txt" && [ "$(grep -c "writing to stdout failed" "$tmp/err")" -eq 1 ]'
if [ -w /dev/full ]; then
  "$ct" fit "$tmp/pipe.yaml" --out "$tmp/full" >/dev/full 2>/dev/full
  st=$?
  that "stdout and stderr on a full device: the run ends, exit 0" '[ $st -eq 0 ] && [ -s "$tmp/full/finished.json" ]'
  that "log.txt says each once" \
    '[ "$(wc -l <"$tmp/full/log.txt")" -eq 2 ] && grep -q "writing to stdout failed" "$tmp/full/log.txt" && grep -q "writing to stderr failed" "$tmp/full/log.txt"'
else
  skip "no /dev/full"
  skip "no /dev/full"
fi

# ---------------------------------------------------------------- crashing plugins
# the default action after our message: a sanitizer's handler, which
# exits 1, stays out of it
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0:handle_abort=0"
export ASAN_OPTIONS
recipe segv "crash: segv, crash_step: 5" "save_state_every: 2"
"$ct" fit "$tmp/segv.yaml" --out "$tmp/segv" >"$tmp/out" 2>"$tmp/err"
st=$?
that "a plugin's SIGSEGV at step 5: exit 139, as without cliptrain's handler" '[ $st -eq 139 ]'
that "saying the plugin, its file, the event, the step and the state to continue from" \
  'grep -q "^cliptrain: fatal signal SIGSEGV in plugin fault (.*fault\.so) during after_batch at training step 5; the last training state is $tmp/segv/state.safetensors (step 4): continue with: cliptrain fit --resume $tmp/segv$" "$tmp/err"'
recipe abort "crash: abort, crash_step: 3"
"$ct" fit "$tmp/abort.yaml" --out "$tmp/abort" >"$tmp/out" 2>"$tmp/err"
st=$?
that "a plugin's abort() at step 3: exit 134, naming it, and no state to continue from" \
  '[ $st -eq 134 ] && grep -q "^cliptrain: fatal signal SIGABRT in plugin fault (.*fault\.so) during after_batch at training step 3; no training state was saved before it" "$tmp/err"'
recipe exit0 "crash: exit0, crash_step: 5" "save_state_every: 2"
"$ct" fit "$tmp/exit0.yaml" --out "$tmp/exit0" >"$tmp/out" 2>"$tmp/err"
st=$?
that "a plugin's exit(0) at step 5 does not pass for a finished run: exit 1" \
  '[ $st -eq 1 ] && [ ! -e "$tmp/exit0/finished.json" ]'
that "saying the plugin, the event, the step and the state" \
  'grep -q "^cliptrain: exit() was called in plugin fault (.*fault\.so) during after_batch at training step 5, before the fit.s end: exit status 1; the last training state is $tmp/exit0/state.safetensors (step 4)" "$tmp/err"'
# fit.save_state_every_seconds: a state after the first step that ends
# that long after the last one
recipe timed "slow_ms: 100" "save_state_every_seconds: 0.5"
that "fit.save_state_every_seconds saves a state by time, without stopping" \
  'run 0 fit "$tmp/timed.yaml" --out "$tmp/timed" && [ -s "$tmp/timed/state.safetensors" ] && [ -s "$tmp/timed/finished.json" ]'
exit $fail
