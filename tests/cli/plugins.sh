#!/bin/sh
# plugins.sh: each shipped callback plugin, run in a real fit, does its job;
# `cliptrain plugins` describes them; bad parameters are refused with the
# recipe position.  Prints TAP.
. "$(dirname "$0")/tap.sh"
# the build tree's plugins, not any installed ones
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
export CLIPTRAIN_PLUGIN_PATH





# recipe NAME EPOCHS CALLBACK...: write $tmp/NAME.yaml
recipe() {
  name=$1 epochs=$2
  shift 2
  cbs="clip_trainer"
  for c in "$@"; do cbs="$cbs, $c"; done
  cat >"$tmp/$name.yaml" <<EOF
model: {preset: tiny}
data: {n_train: 32, n_valid: 16, batch_size: 8}
fit: {epochs: $epochs, threads: 1}
callbacks: [$cbs]
EOF
}

# fit DESCRIPTION STATUS NAME: run recipe NAME into $tmp/NAME.out
fit() { check "$1" "$2" "$ct" fit "$tmp/$3.yaml" --out "$tmp/$3.out"; }

# losses RUN: the train_loss column of RUN's metrics.jsonl
losses() { sed -n 's/.*"train_loss":\([^,}]*\).*/\1/p' "$tmp/$1.out/metrics.jsonl"; }

# metadata FILE: the JSON header of a safetensors file, as text
metadata() { head -c 65536 "$1" | tr -c '[:print:]' '\n'; }

echo "1..66"

# ---- a baseline run, to compare with
recipe base 2
fit "baseline fit" 0 base
lines "baseline: two epochs recorded" "$tmp/base.out/metrics.jsonl" 2

# ---- short_epoch
recipe short 2 "{short_epoch: {pct: 0.25}}"
fit "short_epoch pct 0.25" 0 short
lines "short_epoch: both epochs still recorded" "$tmp/short.out/metrics.jsonl" 2
if [ "$(losses short)" != "$(losses base)" ]; then ok "short_epoch: training was cut short"
else not_ok "short_epoch: the losses equal the full run's"; fi
recipe short1 2 "{short_epoch: {pct: 1}}"
fit "short_epoch pct 1" 0 short1
if [ "$(losses short1)" = "$(losses base)" ]; then ok "short_epoch pct 1 cuts nothing"
else not_ok "short_epoch pct 1 changed the run" "$tmp/short1.out/metrics.jsonl"; fi

# ---- save_model
recipe every 2 "{save_model: {every_epoch: true}}"
fit "save_model every_epoch" 0 every
if [ -f "$tmp/every.out/model_0.safetensors" ] && [ -f "$tmp/every.out/model_1.safetensors" ]; then
  ok "save_model every_epoch wrote model_0 and model_1"
else not_ok "save_model every_epoch: model_0/model_1 missing"; ls "$tmp/every.out" | sed 's/^/# /'; fi
metadata "$tmp/every.out/model_1.safetensors" >"$tmp/meta"
expect "save_model: the weights' metadata has the epoch" "$tmp/meta" '"epoch":"1"'
recipe best 2 "{save_model: {with_opt: true}}"
fit "save_model on valid_loss, with_opt" 0 best
expect "save_model announces the better model" "$tmp/err" \
  '^Better model found at epoch 0 with valid_loss value: [0-9.e+-]+\.$'
if [ -f "$tmp/best.out/model.safetensors" ] && [ -f "$tmp/best.out/model.opt.safetensors" ]; then
  ok "save_model wrote model and model.opt"
else not_ok "save_model: model or model.opt missing"; ls "$tmp/best.out" | sed 's/^/# /'; fi
metadata "$tmp/best.out/model.safetensors" >"$tmp/meta"
expect "save_model: the metadata has the monitored value" "$tmp/meta" '"valid_loss":"[0-9]'
recipe atend 2 "{save_model: {at_end: true, fname: final}}"
fit "save_model at_end" 0 atend
if [ -f "$tmp/atend.out/final.safetensors" ] && ! grep -q Better "$tmp/err"; then
  ok "save_model at_end saved once, without tracking"
else not_ok "save_model at_end" "$tmp/err"; ls "$tmp/atend.out" | sed 's/^/# /'; fi
recipe nope 2 "{save_model: {monitor: nope}}"
fit "save_model with an unknown monitor fails" 1 nope
expect "the error names the monitor and what was logged" "$tmp/err" "monitor 'nope'.*valid_loss"
lines "the error is one line" "$tmp/err" 1

# ---- early_stopping: train_loss with comp greater never improves after epoch 0
recipe early 5 "{early_stopping: {monitor: train_loss, comp: greater, patience: 1}}"
fit "early_stopping" 0 early
lines "early_stopping stopped after 2 of 5 epochs" "$tmp/early.out/metrics.jsonl" 2
expect "early_stopping says so, with its reason" "$tmp/err" \
  '^cliptrain: early_stopping stopped the fit after epoch 1/5 \(step 8\): train_loss has not improved since epoch 0 '
recipe patient 4 "{early_stopping: {monitor: train_loss, comp: greater, patience: 2}}"
fit "early_stopping patience 2" 0 patient
lines "patience 2 waits one more epoch" "$tmp/patient.out/metrics.jsonl" 3
recipe late 3 "{early_stopping: {monitor: train_loss}}"
fit "early_stopping on an improving value" 0 late
lines "an improving value never stops the fit" "$tmp/late.out/metrics.jsonl" 3

# ---- csv_logger
recipe csv 2 csv_logger
fit "csv_logger" 0 csv
lines "csv_logger: header and two rows" "$tmp/csv.out/log.csv" 3
expect "csv_logger: the header names the recorder's values" "$tmp/csv.out/log.csv" \
  '^epoch,train_loss,valid_loss,time$'
expect "csv_logger: a row per epoch" "$tmp/csv.out/log.csv" '^1,[0-9.e+-]+,[0-9.e+-]+,[0-9.e+-]+$'
recipe csvearly 5 csv_logger "{early_stopping: {monitor: train_loss, comp: greater}}"
fit "csv_logger with early_stopping" 0 csvearly
lines "csv_logger keeps the row of the epoch that stopped the fit" "$tmp/csvearly.out/log.csv" 3
recipe csv2 2 "{csv_logger: {fname: $tmp/shared.csv, append: true}}"
check "csv_logger append, first run" 0 "$ct" fit "$tmp/csv2.yaml" --out "$tmp/csv2a.out"
check "csv_logger append, second run" 0 "$ct" fit "$tmp/csv2.yaml" --out "$tmp/csv2b.out"
lines "csv_logger append: one header, four rows" "$tmp/shared.csv" 5

# ---- grad_clip
recipe clip 2 "{grad_clip: {max_norm: 1e-6}}"
fit "grad_clip max_norm 1e-6" 0 clip
if [ "$(losses clip | grep -Ec '^-?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$')" -eq 2 ]; then
  ok "grad_clip: the loss stays finite"
else not_ok "grad_clip: loss not finite" "$tmp/clip.out/metrics.jsonl"; fi
if [ "$(losses clip)" != "$(losses base)" ]; then ok "grad_clip changed the training"
else not_ok "grad_clip: the losses equal the unclipped run's"; fi
recipe noclip 2 "{grad_clip: {max_norm: 1e12}}"
fit "grad_clip with a huge max_norm" 0 noclip
if [ "$(losses noclip)" = "$(losses base)" ]; then ok "grad_clip above the norm changes nothing"
else not_ok "grad_clip max_norm 1e12 changed the training"; fi

# ---- progress (stderr is a file here, not a terminal)
recipe prog 2 progress
fit "progress" 0 prog
expect "progress prints a header" "$tmp/err" '^epoch +train_loss +valid_loss +time$'
expect "progress prints epoch 1's line" "$tmp/err" \
  '^1 +[0-9]+\.[0-9]{6} +[0-9]+\.[0-9]{6} +[0-9]{2}:[0-9]{2}$'
lines "progress: a header and one line per epoch" "$tmp/err" 3
# stdout holds only fit's own lines: the folder, then the files
if ! grep -qv '^cliptrain: \|^  ' "$tmp/out" && ! grep -q "$(printf '\r')" "$tmp/err"; then
  ok "progress: nothing on stdout, no bar off a terminal"
else not_ok "progress wrote to stdout or drew a bar" "$tmp/out"; fi

recipe bar 2 progress
if script --version 2>/dev/null | grep -q util-linux; then
  script -qec "$ct fit $tmp/bar.yaml --out $tmp/bar.out" /dev/null >"$tmp/tty" 2>&1 </dev/null
  if grep -q "$(printf '\r')epoch 1/2 valid \[#*\] 2/2 " "$tmp/tty" &&
     grep -Eq '(^|K)1 +[0-9]+\.[0-9]{6} ' "$tmp/tty"; then
    ok "progress draws a bar on a terminal, and keeps the epoch lines"
  else not_ok "progress on a terminal" "$tmp/tty"; fi
else
  ok "progress on a terminal # SKIP no util-linux script(1)"
fi

# ---- cliptrain plugins
check "cliptrain plugins" 0 "$ct" plugins
for p in clip_trainer short_epoch progress csv_logger save_model early_stopping grad_clip; do
  expect "plugins lists $p with its doc" "$tmp/out" "^$p +[A-Z][^ ]* .*[a-z)]$"
done
check "cliptrain plugins save_model" 0 "$ct" plugins save_model
missing=
for p in monitor comp min_delta fname every_epoch at_end with_opt; do
  grep -Eq "^  $p +(bool|int|double|string) +default " "$tmp/out" || missing="$missing $p"
done
if [ -z "$missing" ]; then ok "plugins save_model describes every parameter"
else not_ok "plugins save_model lacks:$missing" "$tmp/out"; fi

# ---- bad parameters: refused before the run, with the recipe's position
recipe badpct 1 "{short_epoch: {pct: 2}}"
fit "short_epoch pct 2 is refused" 2 badpct
expect "the error gives file:line:col and the parameter" "$tmp/err" "badpct\.yaml:[0-9]+:[0-9]+: .*pct"
lines "the error is one line" "$tmp/err" 1
recipe typo 1 "{short_epoch: {pcts: 0.5}}"
fit "an unknown parameter is refused" 2 typo
expect "did you mean 'pct'" "$tmp/err" "typo\.yaml:[0-9]+:[0-9]+: .*did you mean 'pct'"
recipe comp 1 "{early_stopping: {comp: lesser}}"
fit "a value outside the choices is refused" 2 comp
expect "did you mean 'less'" "$tmp/err" "comp\.yaml:[0-9]+:[0-9]+: .*did you mean 'less'"
recipe zero 1 "{grad_clip: {max_norm: 0}}"
fit "grad_clip max_norm 0 is refused" 2 zero
# two loss callbacks would overwrite each other's gradients
recipe twoloss 1 clip_trainer
fit "a second loss callback stops the run" 1 twoloss
expect "... saying to keep one" "$tmp/err" "already computed this batch's loss: keep one loss callback"
exit $fail
