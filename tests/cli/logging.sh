#!/bin/sh
# logging.sh: what a fit prints on stderr as it goes.  Off a terminal, the
# core's periodic log line (output.log_every_steps / log_every_seconds),
# with or without the progress plugin, and 0 turning it off; on a terminal
# (script(1) gives one), the progress bar with the same figures, counting
# short_epoch's batches, cleared before a message; a plugin that stops the
# fit says which and why, and leaves its metrics and training state.
# Prints TAP.
. "$(dirname "$0")/tap.sh"
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
export CLIPTRAIN_PLUGIN_PATH

# recipe NAME EPOCHS OUTPUT CALLBACK...: write $tmp/NAME.yaml, 8 steps an epoch
recipe() {
  name=$1 epochs=$2 output=$3
  shift 3
  cbs="clip_trainer"
  for c in "$@"; do cbs="$cbs, $c"; done
  cat >"$tmp/$name.yaml" <<EOF
model: {preset: tiny}
data: {n_train: 64, n_valid: 16, batch_size: 8}
fit: {epochs: $epochs, threads: 1}
output: $output
callbacks: [$cbs]
EOF
}

# the log line, field by field; loglines FILE: FILE's log lines
LINE='^epoch [0-9]+/[0-9]+  step [0-9]+/[0-9]+ \([0-9]+\)  loss [0-9.]+  lr [0-9.]+e[-+][0-9]+  samples/s [0-9.]+  mfu [0-9.]+%  elapsed [0-9:]+  eta [0-9:]+$'
loglines() { grep -E '^epoch [0-9]+/[0-9]+  step ' "$1"; }

# sane FILE: every log line has sane values: a finite loss, samples/s > 0,
# mfu in (0, 150], steps in range, the global step counting up
sane() {
  loglines "$1" | awk '
    { split($2, e, "/"); split($4, s, "/"); g = substr($5, 2, length($5) - 2)
      loss = $7; sps = $11; mfu = $13; sub("%", "", mfu)
      if (e[1] < 0 || e[1] >= e[2] || s[1] < 1 || s[1] > s[2]) bad = bad " range:" NR
      if (!(loss + 0 > 0 && loss + 0 < 100)) bad = bad " loss:" NR
      if (!(sps + 0 > 0)) bad = bad " samples/s:" NR
      if (!(mfu + 0 > 0 && mfu + 0 <= 150)) bad = bad " mfu:" NR
      if (g + 0 <= last) bad = bad " global:" NR
      last = g + 0 }
    END { if (bad != "" || NR == 0) { print "bad" bad; exit 1 } }'
}

echo "1..31"

# ---- off a terminal (stderr is a file here)
recipe steps 2 "{log_every_steps: 2, log_every_seconds: 0}"
check "a fit with log_every_steps 2" 0 "$ct" fit "$tmp/steps.yaml" --out "$tmp/steps.out"
cp "$tmp/err" "$tmp/steps.err"
nl=$(loglines "$tmp/steps.err" | wc -l)
that "one log line every 2 of 16 steps (got $nl)" '[ "$nl" -eq 8 ]'
that "every line has every field" \
  '[ "$(grep -Ec "$LINE" "$tmp/steps.err")" -eq 8 ] || { loglines "$tmp/steps.err" >>"$tmp/err"; false; }'
that "and sane values" 'sane "$tmp/steps.err" >>"$tmp/err"'
expect "the first line is epoch 0's step 2 (global 2)" "$tmp/steps.err" '^epoch 0/2  step 2/8 \(2\)  '
expect "the last is epoch 1's step 8 (global 16)" "$tmp/steps.err" '^epoch 1/2  step 8/8 \(16\)  '
that "nothing on stdout but fit's folder and files" '! grep -qv "^cliptrain: \|^  " "$tmp/out"'

recipe secs 1 "{log_every_steps: 0, log_every_seconds: 0.000001}"
check "a fit with log_every_seconds tiny" 0 "$ct" fit "$tmp/secs.yaml" --out "$tmp/secs.out"
nl=$(loglines "$tmp/err" | wc -l)
that "logs by time: a line every step (got $nl)" '[ "$nl" -eq 8 ] && sane "$tmp/err" >>"$tmp/err"'

recipe off 2 "{log_every_steps: 0, log_every_seconds: 0}"
check "a fit with both intervals 0" 0 "$ct" fit "$tmp/off.yaml" --out "$tmp/off.out"
that "prints nothing" '[ ! -s "$tmp/err" ]'

recipe dflt 1 "{}"
check "a short fit with the default intervals" 0 "$ct" fit "$tmp/dflt.yaml" --out "$tmp/dflt.out"
that "prints nothing before 100 steps or 30 s" '[ ! -s "$tmp/err" ]'
expect "the resolved recipe has the defaults" "$tmp/dflt.out/recipe.yaml" '^  log_every_steps: 100$'
check "cliptrain recipe --keys lists them" 0 "$ct" recipe --keys
expect "with their defaults" "$tmp/out" 'output\.log_every_seconds.*30'

recipe prog 2 "{log_every_steps: 4, log_every_seconds: 0}" progress
check "with progress off a terminal" 0 "$ct" fit "$tmp/prog.yaml" --out "$tmp/prog.out"
nl=$(loglines "$tmp/err" | wc -l)
that "the log lines are printed too (got $nl)" '[ "$nl" -eq 4 ]'
expect "and the epoch table, from epoch 0" "$tmp/err" '^0 +[0-9]+\.[0-9]{6} +[0-9]+\.[0-9]{6} '

# ---- a plugin stops the fit
recipe early 5 "{log_every_steps: 0, log_every_seconds: 0}" \
  "{early_stopping: {monitor: train_loss, comp: greater, patience: 1}}"
check "early_stopping stops a fit" 0 "$ct" fit "$tmp/early.yaml" --out "$tmp/early.out"
expect "the line names the plugin, the epoch and the reason" "$tmp/err" \
  '^cliptrain: early_stopping stopped the fit after epoch 1/5 \(step 16\): train_loss has not improved since epoch 0 \(best [0-9.e+-]+, patience 1\); the training state is in .*early\.out/state\.safetensors$'
lines "metrics.jsonl has the two epochs run" "$tmp/early.out/metrics.jsonl" 2
that "the training state is saved" '[ -s "$tmp/early.out/state.safetensors" ]'
check "--resume on it exits 0" 0 "$ct" fit --resume "$tmp/early.out"
expect "saying the run finished, stopped by early_stopping" "$tmp/out" \
  '^cliptrain: .*early.out: the run finished .* after 16 training steps \(early_stopping stopped it\); there is nothing to resume'
lines "and trains no more" "$tmp/early.out/metrics.jsonl" 2

# ---- on a terminal
if script --version 2>/dev/null | grep -q util-linux; then
  recipe bar 2 "{log_every_steps: 1}" progress "{short_epoch: {pct: 0.25}}"
  script -qec "$ct fit $tmp/bar.yaml --out $tmp/bar.out" /dev/null >"$tmp/tty" 2>&1 </dev/null
  cr=$(printf '\r')
  expect "the bar counts short_epoch's 3 training batches" "$tmp/tty" \
    "${cr}epoch 1/2 train \[#+\] 3/3 "
  expect "and its 2 validation batches" "$tmp/tty" "${cr}epoch 1/2 valid \[#+\] 2/2 "
  expect "the bar shows loss, lr, samples/s, mfu and eta" "$tmp/tty" \
    ' loss [0-9.]+ lr [0-9.]+e-[0-9]+ [0-9.]+ samples/s mfu [0-9.]+% eta [0-9:]+'
  that "no log lines under the bar" '! grep -Eq "step [0-9]+/[0-9]+ \(" "$tmp/tty" || { cat "$tmp/tty" >>"$tmp/err"; false; }'
  # a message printed while the bar is up (the skipped image, at the end
  # of the training batches) clears the bar's line first
  src="$srcdir/tests/data/sources"
  for split in train valid; do
    mkdir -p "$tmp/folder/$split/cat" "$tmp/folder/$split/dog"
    for k in 0 1 2 3; do
      cp "$src/rgb$k.png" "$tmp/folder/$split/cat/$k.png"
      cp "$src/rgb$k.png" "$tmp/folder/$split/dog/$k.png"
    done
  done
  cp "$src/corrupt.png" "$tmp/folder/train/cat/bad.png"
  cat >"$tmp/folder.yaml" <<EOF
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
data: {dataset: image_folder, path: folder, templates: ['a photo of a {label}.'], batch_size: 2, corrupt: skip}
fit: {epochs: 1, threads: 1}
callbacks: [clip_trainer, progress]
EOF
  script -qec "$ct fit $tmp/folder.yaml --out $tmp/folder.out" /dev/null >"$tmp/tty" 2>&1 </dev/null
  esc=$(printf '\033')
  expect "a line printed during the bar clears it first" "$tmp/tty" \
    "K${cr}${esc}\[Kcliptrain: epoch 0: training: skipped 1 unreadable image"
else
  for k in 1 2 3 4 5; do skip "progress bar on a terminal: no util-linux script(1)"; done
fi

exit $fail
