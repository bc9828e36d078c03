#!/bin/sh
# faults.sh: runs that go wrong on purpose.  A NaN loss stops the run
# naming the step and the last good state; a full disk (a file-size limit)
# is an error naming the file and leaves no partial file; a second SIGINT
# or SIGTERM quits at once.  Uses tests/plugins/fault.so.  Prints TAP.
. "$(dirname "$0")/tap.sh"
plugins=${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}
check_run="$builddir/tests/unit/check-run"

# recipe NAME EXTRA_CALLBACK [FIT_KEYS]: write $tmp/NAME.yaml
recipe() {
  cat >"$tmp/$1.yaml" <<EOF
seed: 3
model: {preset: tiny}
data: {dataset: synthetic, n_train: 64, n_valid: 16, batch_size: 8}
fit: {epochs: 2, threads: 1${3:+, $3}}
plugin_path: [$plugins]
callbacks: [clip_trainer${2:+, $2}]
EOF
}

echo "1..30"

# ---------------------------------------------------------------- NaN
if [ -f "$plugins/fault.so" ]; then
  recipe nan "{fault: {nan_step: 7}}" "save_state_every: 3"
  that "a NaN loss at step 7 stops the run, exit 1" 'run 1 fit "$tmp/nan.yaml" --out "$tmp/nan"'
  that "one line: the step, the last good state (step 6) and how to resume" \
    '[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "training step 7 (epoch 0, batch 6): the loss is NaN; the last good training state is $tmp/nan/state.safetensors (step 6): resume with cliptrain fit --resume $tmp/nan" "$tmp/err"'
  that "the state it names is whole" '"$check_run" "$tmp/nan" >"$tmp/out" 2>"$tmp/err"'
  that "and resumes: from step 6 the run reaches the NaN of step 7 again" \
    'run 1 fit --resume "$tmp/nan" && grep -q "training step 7 .*the loss is NaN" "$tmp/err"'
  # a state whose weights hold a NaN (written by hand: fit never saves
  # one) is refused on resume, naming the tensor, and never called good
  cp -r "$tmp/nan" "$tmp/nanw"
  hl=$(head -c 4 "$tmp/nanw/state.safetensors" | od -An -tu4 | tr -d ' ')
  printf '\000\000\300\177' | dd of="$tmp/nanw/state.safetensors" bs=1 seek=$((8 + hl)) conv=notrunc 2>/dev/null
  that "resuming from a state with a NaN weight: exit 1 naming the file and the tensor" \
    'run 1 fit --resume "$tmp/nanw" && grep -q "$tmp/nanw/state.safetensors: tensor .model\.[a-z_.0-9]*. holds NaN or inf" "$tmp/err"'
  that "one line, which does not call that state good" \
    '[ "$(wc -l <"$tmp/err")" -eq 1 ] && ! grep -q "good" "$tmp/err"'
  recipe img "{fault: {nan_step: 2, nan_what: images}}"
  that "a NaN pixel makes the loss NaN: the run stops at step 2" \
    'run 1 fit "$tmp/img.yaml" --out "$tmp/img" && grep -q "training step 2 (epoch 0, batch 1): the loss is NaN; no training state was saved before it" "$tmp/err"'
  that "and writes no training state" '[ ! -e "$tmp/img/state.safetensors" ]'
  # a training state is refused for non-finite weights: saving one every
  # step shows that the skipped step left them finite
  recipe handled "{fault: {nan_step: 2, handled: true}}" "save_state_every: 1"
  that "a callback that handles non-finite losses (ct_learner_set_nonfinite_handled) goes on" \
    'run 0 fit "$tmp/handled.yaml" --out "$tmp/handled" && grep -q "fault: skipped 1 non-finite" "$tmp/err"'
  that "with finite weights and validation losses" \
    '[ -s "$tmp/handled/state.safetensors" ] && [ "$(grep -c "\"valid_loss\":[0-9]" "$tmp/handled/metrics.jsonl")" -eq 2 ]'
else
  for i in 1 2 3 4 5 6 7 8 9 10; do skip "tests/plugins/fault.so is not built ($plugins)"; done
fi

# ---------------------------------------------------------------- a full disk
# limited FILE_BYTES ARGS...: cliptrain ARGS with files limited to
# FILE_BYTES, SIGXFSZ ignored, so that write() fails with EFBIG as it
# fails with ENOSPC on a full disk
limited() {
  bytes=$1
  shift
  (trap '' XFSZ; exec prlimit --fsize="$bytes" -- "$ct" "$@") >"$tmp/out" 2>"$tmp/err"
}
# whole DIR: every file in DIR is whole (no partial file, no temporary)
whole() {
  "$check_run" "$1" >"$tmp/files" 2>&1 && ! grep -q "temporary file" "$tmp/files"
}
if command -v prlimit >/dev/null 2>&1; then
  recipe disk "{save_model: {at_end: true, fname: final}}, csv_logger"
  limited 300000 fit "$tmp/disk.yaml" --out "$tmp/d1"
  st=$?
  that "a checkpoint that does not fit: exit 1" '[ $st -eq 1 ]'
  that "one line naming the file and the cause" \
    '[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$tmp/d1/final.safetensors: write failed: File too large" "$tmp/err"'
  that "no final.safetensors, no temporary file, every other file whole" \
    '[ ! -e "$tmp/d1/final.safetensors" ] && whole "$tmp/d1"'
  limited 300000 fit "$tmp/disk.yaml" --stop-after 3 --out "$tmp/d2"
  st=$?
  that "a training state that does not fit: exit 1, naming its file" \
    '[ $st -eq 1 ] && grep -q "$tmp/d2/state-opt-3.safetensors: write failed: File too large" "$tmp/err"'
  that "no state is left behind, and what is there is whole" \
    '[ ! -e "$tmp/d2/state.safetensors" ] && whole "$tmp/d2"'
  # pairs: a failure of the second file removes the first, so that no
  # state-opt-N is left without its state, and no weights without their .opt
  recipe pair "{save_model: {at_end: true, fname: final, with_opt: true}}"
  limited 1500000 fit "$tmp/pair.yaml" --out "$tmp/d6"
  st=$?
  that "save_model with_opt: the .opt file not fitting is an error naming it" \
    '[ $st -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$tmp/d6/final.opt.safetensors: write failed: File too large; $tmp/d6/final.safetensors, written before it, was removed with it" "$tmp/err"'
  that "and leaves neither half of the pair" \
    '[ ! -e "$tmp/d6/final.safetensors" ] && [ ! -e "$tmp/d6/final.opt.safetensors" ] && whole "$tmp/d6"'
  if [ -f "$plugins/big_state.so" ]; then
    # a 3 MB plugin state: the optimizer's file (2.3 MB) fits, the state does not
    recipe bigst "{big_state: {bytes: 3000000}}"
    limited 3000000 fit "$tmp/bigst.yaml" --stop-after 3 --out "$tmp/d7"
    st=$?
    that "a training state not fitting after its optimizer file: exit 1 naming the state" \
      '[ $st -eq 1 ] && grep -q "$tmp/d7/state.safetensors: write failed: File too large" "$tmp/err"'
    that "and no state-opt-3 is left without its state" \
      '[ ! -e "$tmp/d7/state-opt-3.safetensors" ] && [ ! -e "$tmp/d7/state.safetensors" ] && whole "$tmp/d7"'
  else
    skip "tests/plugins/big_state.so is not built"; skip "tests/plugins/big_state.so is not built"
  fi
  # metrics.jsonl grows by a row per epoch until the limit cuts a row short
  recipe grow
  sed -i 's/n_train: 64/n_train: 8/; s/n_valid: 16/n_valid: 8/; s/epochs: 2/epochs: 60/' "$tmp/grow.yaml"
  limited 3000 fit "$tmp/grow.yaml" --out "$tmp/d3"
  st=$?
  that "metrics.jsonl reaching the limit: exit 1, naming it" \
    '[ $st -eq 1 ] && grep -q "$tmp/d3/metrics.jsonl: write failed: File too large" "$tmp/err"'
  that "it holds whole rows only" 'whole "$tmp/d3"'
  # csv_logger appending to a file that nearly reaches the limit already
  mkdir "$tmp/csvdir"
  { echo "epoch,train_loss,valid_loss,time"
    i=0; while [ $i -lt 200 ]; do echo "$i,1.5,1.5,0.25"; i=$((i + 1)); done; } >"$tmp/csvdir/log.csv"
  size=$(wc -c <"$tmp/csvdir/log.csv")
  recipe csvgrow "{csv_logger: {fname: $tmp/csvdir/log.csv, append: true}}"
  limited $((size + 10)) fit "$tmp/csvgrow.yaml" --out "$tmp/d4"
  st=$?
  that "csv_logger's file reaching the limit: exit 1, naming it" \
    '[ $st -eq 1 ] && grep -q "csv_logger (.*) failed in after_epoch: $tmp/csvdir/log.csv: write failed: File too large" "$tmp/err"'
  that "log.csv is cut back to its whole rows" \
    '[ "$(wc -c <"$tmp/csvdir/log.csv")" -eq $size ] && whole "$tmp/csvdir"'
  limited 200 fit "$tmp/disk.yaml" --out "$tmp/d5"
  st=$?
  that "even recipe.yaml not fitting is an error naming it" \
    '[ $st -eq 1 ] && grep -q "$tmp/d5/recipe.yaml" "$tmp/err" && grep -q "File too large" "$tmp/err" && whole "$tmp/d5"'
  # never /dev/full itself: a writer that renamed over it would replace
  # the device (as root); a FIFO shows the same refusal harmlessly
  mkfifo "$tmp/fifo"
  that "a weights file that is not a regular file (a FIFO, /dev/full) is refused, naming it" \
    'run 1 init --preset tiny --out "$tmp/fifo" && grep -q "$tmp/fifo: not a regular file" "$tmp/err" && [ -p "$tmp/fifo" ]'
else
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do skip "prlimit (util-linux) is not installed"; done
fi

# ---------------------------------------------------------------- signals
# each training step takes a second (fault's slow_ms), so that the second
# signal surely comes while the first waits for the step to end
recipe slow "{fault: {slow_ms: 1000}}"
sed -i 's/n_train: 64/n_train: 6000/' "$tmp/slow.yaml"
# signal DIR SIG...: start the slow fit, wait for its first step, send each
# SIG after the previous one was taken; $st is the exit status
signal() {
  dir=$1
  shift
  "$ct" fit "$tmp/slow.yaml" --out "$dir" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  i=0
  while [ ! -s "$dir/manifest.json" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  for sig in "$@"; do
    kill -"$sig" $pid
    i=0
    while ! grep -q "SIG$sig: stopping" "$tmp/err" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  done
  wait $pid
  st=$?
}
if [ -f "$plugins/fault.so" ]; then
  signal "$tmp/sigint" INT INT
  that "a second SIGINT quits at once: exit 130" '[ $st -eq 130 ]'
  that "saying so" 'grep -q "SIGINT: stopping after this step" "$tmp/err" && grep -q "SIGINT again: quitting at once" "$tmp/err"'
  signal "$tmp/sigterm" TERM TERM
  that "a second SIGTERM quits at once: exit 143" '[ $st -eq 143 ]'
  that "saying so, and leaving every file whole" \
    'grep -q "SIGTERM again: quitting at once" "$tmp/err" && whole "$tmp/sigterm"'
  signal "$tmp/sig1" INT
  that "one SIGINT stops after the step, saves the state and exits 0" \
    '[ $st -eq 0 ] && [ -s "$tmp/sig1/state.safetensors" ] && grep -q "continue with: cliptrain fit --resume" "$tmp/err"'
else
  for i in 1 2 3 4 5; do skip "tests/plugins/fault.so is not built ($plugins)"; done
fi
exit $fail
