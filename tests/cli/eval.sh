#!/bin/sh
# eval.sh: a trained model used as the quick start leaves it: --model with
# a weights file, a training state and a run folder (embed's features
# equal between them); `cliptrain eval`'s JSON against what the fit
# recorded for the same weights; `cliptrain zeroshot --data` against
# eval's zero_shot metric, its per-class table and confusion matrix; and
# the one-line errors.  A tiny ResNet checks the BatchNorm statistics of
# a state; the rest runs on Fashion-MNIST (Debian's dataset-fashion-mnist)
# when it is installed, else those tests are skipped.  Prints TAP.
. "$(dirname "$0")/tap.sh"
fm=/usr/share/datasets/fashion-mnist
src="$srcdir/tests/data/sources"

echo "1..44"

# one_line FILE: FILE is one line starting "cliptrain: " (no GLib noise)
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^cliptrain: ' "$1" && ! grep -q 'CRITICAL\|assert' "$1"; }
# json_value FILE NAME: NAME's value as written in FILE (JSON or JSON lines)
json_value() { grep -o "\"$2\" *: *[^,} ]*" "$1" | head -n 1 | sed 's/.*: *//'; }
# line_count FILE WORD: the k of "WORD x (k/n)"
line_count() { sed -n "s/^$2 [0-9.]* (\([0-9]*\)\/[0-9]*)\$/\1/p" "$1"; }

# ---- a tiny ResNet on synthetic data: BatchNorm statistics in the state
cat >"$tmp/rn.yaml" <<'YAML'
seed: 5
model: {preset: rn, image_resolution: 32, vision_width: 8, vision_heads: 2, vision_layers: [1, 2, 1, 1]}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 1, threads: 1, save_state_every: 6}
callbacks: [clip_trainer, {save_model: {at_end: true, fname: final}}]
YAML
that "a tiny ResNet trains 6 steps, its state saved at the last" \
  'run 0 fit "$tmp/rn.yaml" --out "$tmp/rn" && [ -f "$tmp/rn/final.safetensors" ] && [ -f "$tmp/rn/state.safetensors" ]'
that "its final weights and its state give the same image features" \
  'run 0 embed --model "$tmp/rn/final.safetensors" --images "$src/rgb0.png" "$src/photo.jpg" --out "$tmp/rf.npy" && run 0 embed --model "$tmp/rn/state.safetensors" --images "$src/rgb0.png" "$src/photo.jpg" --out "$tmp/rs.npy" && cmp -s "$tmp/rf.npy" "$tmp/rs.npy"'
that "eval of its state gives the fit's valid_loss exactly" \
  'run 0 eval "$tmp/rn.yaml" --model "$tmp/rn/state.safetensors" && [ -n "$(json_value "$tmp/out" valid_loss)" ] && [ "$(json_value "$tmp/out" valid_loss)" = "$(json_value "$tmp/rn/metrics.jsonl" valid_loss)" ]'

if [ ! -f "$fm/t10k-labels-idx1-ubyte.gz" ]; then
  i=3
  while [ $i -lt 44 ]; do skip "Fashion-MNIST is not installed in $fm"; i=$((i + 1)); done
  exit 0
fi

# the quick start's recipe, small: 16 training steps, 300 validation
# images, a model saved at the end and a training state at the last step
sed -e 's#^  - progress#  - {save_model: {at_end: true}}#' \
    -e "s#/usr/share/datasets/fashion-mnist#$fm#" "$srcdir/recipes/fashion_mnist.yaml" >"$tmp/fm.yaml"
set -- --set data.n_train=1024 --set data.n_valid=300 --set fit.epochs=1 --set fit.threads=1 \
  --set data.workers=1
S="$*"
r="$tmp/run"
that "a small Fashion-MNIST model trains (the fixture)" \
  'run 0 fit "$tmp/fm.yaml" $S --set fit.save_state_every=16 --out "$r" && [ -f "$r/model.safetensors" ] && [ -f "$r/state.safetensors" ]'
head -c 65536 "$r/state.safetensors" | tr -d '\000' >"$tmp/h"
expect "the training state records the model's config" "$tmp/h" '"config.embed_dim":"128"'
expect "and the learned vocabulary" "$tmp/h" '"vocab":"#version'

# ---- --model: a weights file, a training state, a run folder
printf 'a photo of a bag.\na sneaker.\n' >"$tmp/texts.txt"
that "embed --model WEIGHTS writes text features" \
  'run 0 embed --model "$r/model.safetensors" --texts "$tmp/texts.txt" --out "$tmp/w.npy"'
that "embed --model STATE gives the same features (the state's vocabulary)" \
  'run 0 embed --model "$r/state.safetensors" --texts "$tmp/texts.txt" --out "$tmp/s.npy" && cmp -s "$tmp/w.npy" "$tmp/s.npy"'
that "embed --model RUN_DIR reads its model.safetensors" \
  'run 0 embed --model "$r" --texts "$tmp/texts.txt" --out "$tmp/d.safetensors" && head -c 4096 "$tmp/d.safetensors" | grep -q "\"model\":\"$r/model.safetensors\""'
mkdir "$tmp/stateonly"
cp "$r/state.safetensors" "$r/recipe.yaml" "$tmp/stateonly/"
that "a run folder without model.safetensors gives its state.safetensors" \
  'run 0 embed --model "$tmp/stateonly" --texts "$tmp/texts.txt" --out "$tmp/so.npy" && cmp -s "$tmp/w.npy" "$tmp/so.npy"'
that "retrieve --model RUN_DIR searches an index embedded by the same model" \
  'run 0 embed --model "$r" --images "$src/rgb0.png" "$src/rgb1.png" "$src/photo.jpg" --out "$tmp/idx.safetensors" && run 0 retrieve --model "$r" --index "$tmp/idx.safetensors" --query "a photo of a bag." -k 3 && [ "$(grep -c "^[-0-9.]* $src/" "$tmp/out")" -eq 3 ]'
that "zeroshot --model RUN_DIR labels images" \
  'run 0 zeroshot --model "$r" --labels "bag,sneaker" "$src/rgb0.png" && grep -q "^$src/rgb0.png: \(bag\|sneaker\) [01]\.[0-9]*, \(bag\|sneaker\) " "$tmp/out"'
mkdir "$tmp/nothing"
that "a folder with neither is a one-line error naming it" \
  'run 1 embed --model "$tmp/nothing" --texts "$tmp/texts.txt" --out "$tmp/x.npy" && one_line "$tmp/err" && grep -q "$tmp/nothing: a folder without model.safetensors or state.safetensors" "$tmp/err"'
that "so it is for eval" \
  'run 1 eval "$tmp/fm.yaml" --model "$tmp/nothing" && one_line "$tmp/err" && grep -q "$tmp/nothing" "$tmp/err"'
that "and a missing file" \
  'run 1 zeroshot --model "$tmp/none.safetensors" --data "$tmp/fm.yaml" && one_line "$tmp/err" && grep -q "none.safetensors" "$tmp/err"'
that "embed --help says what --model takes" \
  'run 0 embed --help && grep -q "Weights (safetensors), a training state, or a run folder" "$tmp/out"'

# ---- eval
mkdir "$tmp/cwd"
that "eval RECIPE --model RUN_DIR --out FILE succeeds" \
  '(cd "$tmp/cwd" && "$ct" eval "$tmp/fm.yaml" $S --model "$r" --out e.json >"$tmp/out" 2>"$tmp/err")'
e="$tmp/cwd/e.json"
that "its JSON has valid_loss, zero_shot_top1, zero_shot_top5, class_retrieval_at_5" \
  '(for k in valid_loss zero_shot_top1 zero_shot_top5 class_retrieval_at_5; do [ -n "$(json_value "$e" $k)" ] || exit 1; done)'
that "and no train_loss nor time" '! grep -q "train_loss\|\"time\"" "$e"'
that "it says the validation samples" '[ "$(json_value "$e" valid_samples)" = 300 ]'
that "it prints the values as NAME VALUE lines" 'grep -q "^zero_shot_top1 [0-9.]*$" "$tmp/out"'
that "it writes nothing but --out (no run folder)" '[ "$(ls "$tmp/cwd")" = e.json ]'
# the fit's last validation saw the same weights: the values agree exactly
# (the same batches, kernels and summation order; threads do not change it)
for k in valid_loss zero_shot_top1 zero_shot_top5 class_retrieval_at_5; do
  that "eval's $k equals the fit's (metrics.jsonl) exactly" \
    '[ -n "$(json_value "$r/metrics.jsonl" $k)" ] && [ "$(json_value "$e" $k)" = "$(json_value "$r/metrics.jsonl" $k)" ]'
done
that "eval --model STATE with --threads 2 gives the same JSON metrics, on stdout" \
  'run 0 eval "$tmp/fm.yaml" $S --model "$r/state.safetensors" --threads 2 && (for k in valid_loss zero_shot_top1 zero_shot_top5 class_retrieval_at_5; do [ -n "$(json_value "$e" $k)" ] && [ "$(json_value "$tmp/out" $k)" = "$(json_value "$e" $k)" ] || exit 1; done)'
that "eval --help says cliptrain eval, an example and docs/models.md" \
  'run 0 eval --help && grep -q "cliptrain eval" "$tmp/out" && grep -q "Example" "$tmp/out" && grep -q "docs/models.md" "$tmp/out"'
that "eval without --model is bad usage" 'run 2 eval "$tmp/fm.yaml" && one_line "$tmp/err"'

# ---- zeroshot --data
that "zeroshot --data RECIPE --confusion FILE succeeds" \
  'run 0 zeroshot --model "$r" --data "$tmp/fm.yaml" $S --confusion "$tmp/conf.csv"'
cp "$tmp/out" "$tmp/zs"
that "it scores the 300 validation images" 'grep -q "^samples 300$" "$tmp/zs"'
that "its top-1 is eval's zero_shot_top1" \
  'awk -v k="$(line_count "$tmp/zs" top1)" -v v="$(json_value "$e" zero_shot_top1)" "BEGIN { exit !(k != \"\" && k == int(v * 300 + 0.5)) }"'
that "its top-5 is eval's zero_shot_top5" \
  'awk -v k="$(line_count "$tmp/zs" top5)" -v v="$(json_value "$e" zero_shot_top5)" "BEGIN { exit !(k != \"\" && k == int(v * 300 + 0.5)) }"'
that "its table has the 10 classes with counts summing to 300" \
  '[ "$(sed -n "/^class /,\$p" "$tmp/zs" | sed 1d | awk "{ s += \$(NF-1) } END { print NR, s }")" = "10 300" ]'
that "the confusion matrix has a header and 10 rows of 10 counts" \
  'head -n 1 "$tmp/conf.csv" | grep -q "^true.predicted,t-shirt/top,trouser,.*,ankle boot$" && [ "$(sed 1d "$tmp/conf.csv" | awk -F, "NF == 11" | wc -l)" = 10 ]'
that "its rows sum to the table's per-class counts" \
  '[ "$(sed 1d "$tmp/conf.csv" | awk -F, "{ s = 0; for (i = 2; i <= NF; i++) s += \$i; print s }")" = "$(sed -n "/^class /,\$p" "$tmp/zs" | sed 1d | awk "{ print \$(NF-1) }")" ]'
that "its diagonal over its total is the top-1" \
  '[ "$(sed 1d "$tmp/conf.csv" | awk -F, "{ d += \$(NR + 1); for (i = 2; i <= NF; i++) t += \$i } END { print d \"/\" t }")" = "$(line_count "$tmp/zs" top1)/300" ]'
that "no temporary file is left beside it" '[ "$(ls "$tmp" | grep -c "conf.csv")" = 1 ]'
that "--split train --limit 40 scores 40 training images" \
  'run 0 zeroshot --model "$r" --data "$tmp/fm.yaml" $S --split train --limit 40 && grep -q "^samples 40$" "$tmp/out"'
that "labels out of range are a one-line error" \
  'run 1 zeroshot --model "$r" --data "$tmp/fm.yaml" $S --labels a,b && one_line "$tmp/err" && grep -q "label [0-9] is out of range: there are 2 classes" "$tmp/err"'

# ---- captioned data (CSV), a recipe without classes or validation
mkdir -p "$tmp/csv"
{
  echo "filepath,title"
  for k in 0 1 2 3; do echo "$src/rgb$k.png,a photo of a cat."; echo "$src/rgb$k.png,a photo of a dog."; done
} >"$tmp/csv/train.csv"
sed -n '/^model:/,/^  transformer_layers/p' "$tmp/fm.yaml" >"$tmp/model.yaml"
{
  echo "seed: 0"
  echo "data: {dataset: csv, path: $tmp/csv/train.csv, templates: ['a photo of a {label}.'], batch_size: 4, vocab_size: 640}"
  cat "$tmp/model.yaml"
  echo "fit: {threads: 1}"
  echo "callbacks: [clip_trainer]"
} >"$tmp/csv.yaml"
that "eval of a recipe without a validation set is a one-line error" \
  'run 2 eval "$tmp/csv.yaml" --model "$r" && one_line "$tmp/err" && grep -q "no validation set" "$tmp/err"'
that "zeroshot --data of a recipe without classes is a one-line error" \
  'run 2 zeroshot --model "$r" --data "$tmp/csv.yaml" --split train && one_line "$tmp/err" && grep -q "names no classes" "$tmp/err"'
that "captions that name the classes (--labels) are scored" \
  'run 0 zeroshot --model "$r" --data "$tmp/csv.yaml" --split train --labels cat,dog && grep -q "^samples 8$" "$tmp/out" && [ "$(grep -c "^\(cat\|dog\) *4 " "$tmp/out")" = 2 ]'
echo "filepath,title" >"$tmp/csv/empty.csv"
that "an empty dataset is a one-line error" \
  'run 1 zeroshot --model "$r" --data "$tmp/csv.yaml" --set data.path=$tmp/csv/empty.csv --split train --labels cat,dog && one_line "$tmp/err" && grep -q "empty" "$tmp/err"'

exit $fail
