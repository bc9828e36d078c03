#!/bin/sh
# fit.sh: `cliptrain fit` end to end: the run folder, reproducibility
# (same recipe and seed give bit-identical losses and weights; the resolved
# recipe.yaml repeats the run), extends and --set, and one-line errors
# with file:line:column and exit status 2 for bad recipes.  Prints TAP.
. "$(dirname "$0")/tap.sh"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

cat >"$tmp/base.yaml" <<'YAML'
seed: 3
model: {preset: tiny}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 2, threads: 1}
callbacks:
  - clip_trainer
  - save_model: {at_end: true, fname: final}
YAML
cat >"$tmp/child.yaml" <<'YAML'
extends: base.yaml
optimizer: {weight_decay: 0.05}
fit: {epochs: 3}
YAML

echo "1..36"
that "a run succeeds" 'run 0 fit "$tmp/base.yaml" --out "$tmp/a"'
for f in recipe.yaml manifest.json metrics.jsonl history.csv final.safetensors; do
  that "the run folder holds $f" '[ -s "$tmp/a/$f" ]'
done
that "metrics.jsonl has one line per epoch" '[ "$(wc -l <"$tmp/a/metrics.jsonl")" -eq 2 ]'
that "manifest.json names the plugins with their sha256" \
  'grep -q "\"name\" : \"clip_trainer\"" "$tmp/a/manifest.json" && grep -q "\"sha256\" : \"[0-9a-f]\{64\}\"" "$tmp/a/manifest.json"'
that "a second run of the same recipe" 'run 0 fit "$tmp/base.yaml" --out "$tmp/b"'
that "gives bit-identical losses" 'losses "$tmp/a" >"$tmp/la"; losses "$tmp/b" >"$tmp/lb"; cmp -s "$tmp/la" "$tmp/lb"'
that "and bit-identical weights" 'cmp -s "$tmp/a/final.safetensors" "$tmp/b/final.safetensors"'
that "the resolved recipe repeats the run" 'run 0 fit "$tmp/a/recipe.yaml" --out "$tmp/c" && losses "$tmp/c" >"$tmp/lc" && cmp -s "$tmp/la" "$tmp/lc" && cmp -s "$tmp/a/final.safetensors" "$tmp/c/final.safetensors"'
that "the resolved recipe fills defaults" 'grep -q "weight_decay: 0.2" "$tmp/a/recipe.yaml" && grep -q "vision_width: 64" "$tmp/a/recipe.yaml"'
that "another seed gives other losses" 'run 0 fit "$tmp/base.yaml" --set seed=4 --out "$tmp/d" && losses "$tmp/d" >"$tmp/ld" && ! cmp -s "$tmp/la" "$tmp/ld"'
that "extends composes recipes" 'run 0 fit "$tmp/child.yaml" --out "$tmp/e" && [ "$(wc -l <"$tmp/e/metrics.jsonl")" -eq 3 ] && grep -q "weight_decay: 0.05" "$tmp/e/recipe.yaml" && grep -q "n_train: 48" "$tmp/e/recipe.yaml"'
that "--set overrides any key" 'run 0 fit "$tmp/base.yaml" --set fit.epochs=1 --set optimizer.lr=3e-4 --out "$tmp/f" && [ "$(wc -l <"$tmp/f/metrics.jsonl")" -eq 1 ] && grep -q "lr: 3e-4" "$tmp/f/recipe.yaml"'
that "a used run folder is refused" 'run 1 fit "$tmp/base.yaml" --out "$tmp/a" && grep -q "already holds a run" "$tmp/err"'

printf 'seed: 1\nfit: {epoch: 2}\n' >"$tmp/bad1.yaml"
that "an unknown key: exit 2, file:line:col, did-you-mean" \
  'run 2 fit "$tmp/bad1.yaml" && grep -q "bad1.yaml:2:7: fit: unknown key .epoch.; did you mean .epochs." "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
printf 'seed: 1\n"da\\nta\\x1b[31m": {}\n' >"$tmp/badkey.yaml"
that "a key with a newline and an escape in it: one line, escaped" \
  'run 2 fit "$tmp/badkey.yaml" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "unknown section .da.x0ata.x1b.31m." "$tmp/err"'
printf 'seed: 1\noptimizer:\n  lr: fast\n' >"$tmp/bad2.yaml"
that "a wrong type: exit 2 with the position" 'run 2 fit "$tmp/bad2.yaml" && grep -q "bad2.yaml:3:7: optimizer.lr" "$tmp/err"'
printf 'seed: 1\nfit:\n  epochs: 0\n' >"$tmp/bad3.yaml"
that "a value out of range: exit 2" 'run 2 fit "$tmp/bad3.yaml" && grep -q "bad3.yaml:3:11: fit.epochs" "$tmp/err"'
printf 'callbacks: [clip_trainer, nosuchplugin]\n' >"$tmp/bad4.yaml"
that "a missing plugin: exit 2 naming it" 'run 2 fit "$tmp/bad4.yaml" && grep -q "bad4.yaml:1:27: callbacks.1: no plugin .nosuchplugin." "$tmp/err"'
if [ -n "$CT_TEST_PLUGINS" ] && [ -f "$CT_TEST_PLUGINS/abi_future.so" ]; then
  printf 'plugin_path: [%s]\ncallbacks: [clip_trainer, abi_future]\n' "$CT_TEST_PLUGINS" >"$tmp/abi.yaml"
  that "a plugin built for another ABI: exit 2 naming both versions" \
    'run 2 fit "$tmp/abi.yaml" --out "$tmp/h" && grep -q "abi.yaml:2:27: callbacks.1: .*abi_future.so: plugin ABI 1.99 does not match cliptrain.s 1.4" "$tmp/err"'
else
  skip "the test plugins are not built (CT_TEST_PLUGINS)"
fi
that "adam, with fastai's defaults in the resolved recipe" \
  'run 0 fit "$tmp/base.yaml" --set optimizer.name=adam --out "$tmp/o1" && grep -q "beta2: 0.99" "$tmp/o1/recipe.yaml" && grep -q "eps: 1e-5" "$tmp/o1/recipe.yaml"'
that "sgd trains" 'run 0 fit "$tmp/base.yaml" --set optimizer.name=sgd --out "$tmp/o2"'
that "one_cycle fills its parameters" \
  'run 0 fit "$tmp/base.yaml" --set schedule.name=one_cycle --out "$tmp/o3" && grep -q "div_final: 100000" "$tmp/o3/recipe.yaml" && grep -q "pct_start: 0.25" "$tmp/o3/recipe.yaml"'
that "flat_cos with the fastai/self_supervised CLIP module's pct_start (0.25) changes the losses" \
  'run 0 fit "$tmp/base.yaml" --set schedule.name=flat_cos --set schedule.pct_start=0.25 --out "$tmp/o4" && losses "$tmp/o4" >"$tmp/l4" && ! cmp -s "$tmp/la" "$tmp/l4"'
that "an lr_mult glob that matches nothing: exit 2 at its position" \
  'run 2 fit "$tmp/base.yaml" --set "optimizer.lr_mult={visul.*: 2}" && grep -q "optimizer.lr_mult: .visul.\*. matches no tensor" "$tmp/err"'
that "lock_image leaves the image tower as initialised" \
  'run 0 fit "$tmp/base.yaml" --set optimizer.lock_image=true --set fit.epochs=1 --out "$tmp/o5" && run 0 fit "$tmp/base.yaml" --set optimizer.lock_image=true --set optimizer.lr=0.5 --set fit.epochs=1 --out "$tmp/o6" && run 0 embed --model "$tmp/o5/final.safetensors" --images "$srcdir/tests/data/sources/rgb0.png" --out "$tmp/e5.npy" && run 0 embed --model "$tmp/o6/final.safetensors" --images "$srcdir/tests/data/sources/rgb0.png" --out "$tmp/e6.npy" && cmp -s "$tmp/e5.npy" "$tmp/e6.npy"'
that "model.init fine-tunes from earlier weights" \
  'run 0 fit "$tmp/base.yaml" --set "model.init=$tmp/a/final.safetensors" --set fit.epochs=1 --out "$tmp/ft" && grep -q "init: $tmp/a/final.safetensors" "$tmp/ft/recipe.yaml" && [ "$(head -c 60 "$tmp/ft/metrics.jsonl")" != "$(head -c 60 "$tmp/a/metrics.jsonl")" ]'
that "weights of another config: exit 2 naming the keys that differ" \
  'run 2 fit "$tmp/base.yaml" --set "model.init=$tmp/a/final.safetensors" --set model.vision_width=32 --set model.vision_heads=1 && grep -q "vision_width 64 (the recipe says 32)" "$tmp/err"'
# a NaN in model.init's first stored tensor: refused on load, naming the
# file and the tensor (not "the loss is NaN" at step 1)
run 0 init --preset tiny --out "$tmp/nan.safetensors"
hl=$(head -c 4 "$tmp/nan.safetensors" | od -An -tu4 | tr -d ' ')
printf '\000\000\300\177' | dd of="$tmp/nan.safetensors" bs=1 seek=$((8 + hl)) conv=notrunc 2>/dev/null
that "model.init with a NaN weight: exit 2 naming the file and the tensor" \
  'run 2 fit "$tmp/base.yaml" --set "model.init=$tmp/nan.safetensors" --out "$tmp/nanrun" && grep -q "^cliptrain: .*$tmp/nan.safetensors: tensor .[a-z_.0-9]*. holds NaN or inf (element 0 of [0-9]*)" "$tmp/err" && [ ! -e "$tmp/nanrun" ]'
that "embed refuses those weights too" \
  'run 1 embed --model "$tmp/nan.safetensors" --images "$srcdir/tests/data/sources/rgb0.png" --out "$tmp/nan.npy" && grep -q "holds NaN or inf" "$tmp/err"'
# optimizer values the optimizer refuses: at their position in the recipe
sed 's/^optimizer: {lr: 1.0e-3}/optimizer: {lr: 1.0e-3, name: adam, beta1: 1}/' "$tmp/base.yaml" >"$tmp/beta1.yaml"
that "optimizer.beta1: 1 is refused at its file:line:column, exit 2" \
  'run 2 fit "$tmp/beta1.yaml" && grep -q "^cliptrain: $tmp/beta1.yaml:4:[0-9]*: optimizer.beta1: .*out of range (\[0, 1))$" "$tmp/err"'
that "optimizer.eps: 0 (a NaN at step 2) is refused, exit 2" \
  'run 2 fit "$tmp/base.yaml" --set optimizer.eps=0 && grep -q "^cliptrain: --set optimizer.eps=0: optimizer.eps: .*out of range (finite, > 0)$" "$tmp/err"'
printf 'seed: 1\ndata: {n_train: 16, batch_size: 8}\n' >"$tmp/noloss.yaml"
that "no loss callback: exit 1 naming clip_trainer" 'run 1 fit "$tmp/noloss.yaml" --out "$tmp/g" && grep -q "clip_trainer" "$tmp/err"'
exit $fail
