#!/bin/sh
# patch-dropout.sh: model.patch_dropout (FLIP) in fit runs: it changes
# training, 0 equals a recipe without the key, a run stopped and resumed
# draws the same patches as one never stopped (bit-identical weights), a
# fine-tune from its weights may turn it off, and bad values or a ResNet
# tower are refused in one line; bench --patch-dropout; the unmasked_tuning
# callback turns it off at its step, resumes exactly either side of the
# switch, and refuses a model without patch dropout.  Prints TAP.
. "$(dirname "$0")/tap.sh"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

cat >"$tmp/r.yaml" <<'YAML'
seed: 11
model: {preset: tiny, patch_dropout: 0.5}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 2, threads: 1}
callbacks:
  - clip_trainer
  - save_model: {at_end: true, fname: final}
YAML
sed 's/, patch_dropout: 0.5//' "$tmp/r.yaml" >"$tmp/none.yaml"

echo "1..20"
that "a run with patch_dropout 0.5" 'run 0 fit "$tmp/r.yaml" --out "$tmp/straight"'
that "the resolved recipe says it" 'grep -q "patch_dropout: 0.5" "$tmp/straight/recipe.yaml"'
that "the same run again: the same weights, bit for bit" \
  'run 0 fit "$tmp/r.yaml" --out "$tmp/again" && cmp -s "$tmp/straight/final.safetensors" "$tmp/again/final.safetensors"'
that "--stop-after 5 then --resume: the weights of the run never stopped" \
  'run 0 fit "$tmp/r.yaml" --stop-after 5 --out "$tmp/s" && run 0 fit --resume "$tmp/s" && cmp -s "$tmp/straight/final.safetensors" "$tmp/s/final.safetensors"'
that "and its losses (validation on every token)" \
  'losses "$tmp/straight" >"$tmp/a" && losses "$tmp/s" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b"'
that "patch dropout changes training" \
  'run 0 fit "$tmp/none.yaml" --out "$tmp/none" && ! cmp -s "$tmp/none/final.safetensors" "$tmp/straight/final.safetensors"'
# (the files' metadata hold the recipes, which differ: the tensors and losses are compared)
that "patch_dropout 0 equals a recipe without the key, bit for bit" \
  'run 0 fit "$tmp/r.yaml" --set model.patch_dropout=0 --out "$tmp/zero" && "$builddir/tests/unit/st-diff" "$tmp/none/final.safetensors" "$tmp/zero/final.safetensors" "" 0 >/dev/null && losses "$tmp/none" >"$tmp/a" && losses "$tmp/zero" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b"'
that "a fine-tune from its weights with --set model.patch_dropout=0" \
  'run 0 fit "$tmp/r.yaml" --set model.init="$tmp/straight/final.safetensors" --set model.patch_dropout=0 --set fit.epochs=1 --out "$tmp/ft" && [ -s "$tmp/ft/final.safetensors" ]'
that "patch_dropout 1 is refused in one line (exit 2)" \
  'run 2 fit "$tmp/r.yaml" --set model.patch_dropout=1 --out "$tmp/bad" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "model.patch_dropout: patch dropout 1 is out of range" "$tmp/err"'
that "a ResNet image tower refuses it in one line (exit 2)" \
  'run 2 fit "$tmp/r.yaml" --set model.preset=rn --out "$tmp/rn" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "patch_dropout.*needs a ViT image tower" "$tmp/err"'
sed 's/patch_dropout: 0.5/patch_dropout: 1.0/' "$tmp/r.yaml" >"$tmp/one.yaml"
that "cliptrain recipe refuses 1 in one line naming the file and line (exit 2)" \
  'run 2 recipe "$tmp/one.yaml" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "one.yaml:2:.*model.patch_dropout: patch dropout 1 is out of range" "$tmp/err"'
that "and fit writes no run folder for it" \
  'run 2 fit "$tmp/one.yaml" --out "$tmp/one" && [ ! -e "$tmp/one" ]'
that "bench --patch-dropout 0.75 runs the tower on fewer tokens" \
  'run 0 bench -p tiny -b 4 -s 1 -t 1 --patch-dropout 0.75 && grep -q "\"patch_dropout\":0.75" "$tmp/out"'
that "bench --patch-dropout 1 is bad usage" 'run 2 bench -p tiny -b 4 -s 1 --patch-dropout 1'
# unmasked_tuning: 6 steps an epoch, 12 in all; pct 0.5 switches at step 6
ut="callbacks+={unmasked_tuning: {pct: 0.5}}"
that "unmasked_tuning turns patch dropout off at step 6 of 12, and says so" \
  'run 0 fit "$tmp/r.yaml" --set "$ut" --out "$tmp/ut" && grep -q "unmasked_tuning: patch dropout off from training step 6$" "$tmp/out" "$tmp/err"'
that "... which changes training from both ends" \
  '! cmp -s "$tmp/ut/final.safetensors" "$tmp/straight/final.safetensors" && ! "$builddir/tests/unit/st-diff" "$tmp/none/final.safetensors" "$tmp/ut/final.safetensors" "" 0 >/dev/null 2>&1'
that "stopped before the switch and resumed: the same weights bit for bit" \
  'run 0 fit "$tmp/r.yaml" --set "$ut" --stop-after 3 --out "$tmp/ut3" && run 0 fit --resume "$tmp/ut3" && cmp -s "$tmp/ut/final.safetensors" "$tmp/ut3/final.safetensors"'
that "stopped after the switch and resumed: the same weights bit for bit" \
  'run 0 fit "$tmp/r.yaml" --set "$ut" --stop-after 8 --out "$tmp/ut8" && run 0 fit --resume "$tmp/ut8" && cmp -s "$tmp/ut/final.safetensors" "$tmp/ut8/final.safetensors"'
that "pct 1 trains every step on every token: the run without patch dropout, bit for bit" \
  'run 0 fit "$tmp/r.yaml" --set "callbacks+={unmasked_tuning: {pct: 1}}" --out "$tmp/ut1" && "$builddir/tests/unit/st-diff" "$tmp/none/final.safetensors" "$tmp/ut1/final.safetensors" "" 0 >/dev/null'
that "unmasked_tuning without patch dropout is refused in one line" \
  'run 1 fit "$tmp/none.yaml" --set "$ut" --out "$tmp/utn" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "unmasked_tuning.*the model trains without patch dropout" "$tmp/err"'
exit $fail
