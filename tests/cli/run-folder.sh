#!/bin/sh
# run-folder.sh: the run folder from a user's side: paths resolve from
# where they were written (a recipe file's folder, or the current
# directory for --set) and are absolute in OUT/recipe.yaml, so a run
# started by relative paths resumes from a third folder; fit names its
# folder and lists its files; a finished run is not retrained; a run that
# fails before its first step leaves no folder, one that fails later
# leaves a state to continue from; checks that can run before the first
# step do; --set edits lists.  Every command runs with
# G_DEBUG=fatal-warnings (tap.sh), so a GLib-CRITICAL or warning fails it.  Prints TAP.
. "$(dirname "$0")/tap.sh"
src="$srcdir/tests/data/sources"
ct=$(cd "$(dirname "$ct")" && pwd)/cliptrain # the tests change folders
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }
# same_tensors A B: two safetensors files hold the same bytes after their
# headers (whose metadata holds the recipe, which may differ)
same_tensors() {
  ha=$(od -An -tu8 -N8 "$1" | tr -d ' ') hb=$(od -An -tu8 -N8 "$2" | tr -d ' ')
  tail -c +$((ha + 9)) "$1" >"$tmp/ta" && tail -c +$((hb + 9)) "$2" >"$tmp/tb" &&
    [ -s "$tmp/ta" ] && cmp -s "$tmp/ta" "$tmp/tb"
}

# a project: recipes/, data/ (an image folder of two classes) and plug/
# (a plugin folder), all named relative to the recipe
mkdir -p "$tmp/proj/recipes" "$tmp/proj/plug" "$tmp/elsewhere" "$tmp/third"
for split in train valid; do
  for cls in cat dog; do
    mkdir -p "$tmp/proj/data/$split/$cls"
    for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/proj/data/$split/$cls/$k.png"; done
  done
done
cp "$CT_TEST_PLUGINS/fault.so" "$tmp/proj/plug/"
cat >"$tmp/proj/recipes/r.yaml" <<'YAML'
seed: 3
data:
  dataset: image_folder
  path: ../data
  templates: ['a photo of a {label}.']
  batch_size: 4
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
fit: {epochs: 2, threads: 1}
plugin_path: [../plug]
callbacks: [clip_trainer, fault, {save_model: {at_end: true}}]
metrics:
  - zero_shot: {class_names: [cat, dog], templates: ['a photo of a {label}.', 'a {label}.']}
YAML

echo "1..29"
cd "$tmp/elsewhere" || exit 1
that "a relative recipe with relative data and plugin paths runs from another folder" \
  'run 0 fit ../proj/recipes/r.yaml --out run --stop-after 3'
that "no GLib-CRITICAL or warning reaches the user" '! grep -Eq "CRITICAL|WARNING|assertion" "$tmp/err"'
that "fit names its run folder when it starts, on stdout" 'grep -q "the run.s folder is run$" "$tmp/out"'
that "recipe.yaml holds the data path absolute" "grep -q '^  path: $tmp/proj/data\$' run/recipe.yaml"
that "and plugin_path absolute" "grep -q '^- $tmp/proj/plug\$' run/recipe.yaml"
cd "$tmp/third" || exit 1
that "the run resumes from a third folder" 'run 0 fit --resume ../elsewhere/run'
that "and finishes, listing its files, the model first" \
  'grep -A1 "finished after 4 training steps; ../elsewhere/run holds:" "$tmp/out" | grep -q "model.safetensors"'
that "finished.json lists the files" 'grep -q "\"model.safetensors\"" ../elsewhere/run/finished.json'
cd "$tmp/elsewhere" || exit 1
that "it trained as a run never stopped" \
  'run 0 fit ../proj/recipes/r.yaml --out whole && losses run >"$tmp/l1" && losses whole >"$tmp/l2" && cmp -s "$tmp/l1" "$tmp/l2" && cmp -s run/model.safetensors whole/model.safetensors'
that "--resume on a finished run says so and exits 0" \
  'run 0 fit --resume whole && grep -q "the run finished .* after 4 training steps; there is nothing to resume" "$tmp/out" && ! grep -q "the run.s folder" "$tmp/out"'

# --set paths start from the current directory, recipe paths from the recipe's folder
cd "$tmp/proj" || exit 1
that "a --set path resolves against the current directory" \
  'run 0 recipe recipes/r.yaml --set data.path=data && grep -q "^  path: $tmp/proj/data\$" "$tmp/out"'
that "a recipe path resolves against the recipe's folder" \
  'run 0 recipe recipes/r.yaml && grep -q "^  path: $tmp/proj/data\$" "$tmp/out"'
printf 'extends: ../recipes/r.yaml\ndata: {vocab: v.txt}\n' >"$tmp/proj/plug/child.yaml"
that "a key of an extended recipe resolves against its own file's folder" \
  'run 0 recipe plug/child.yaml && grep -q "^  path: $tmp/proj/data\$" "$tmp/out" && grep -q "^  vocab: $tmp/proj/plug/v.txt\$" "$tmp/out"'

# --set edits lists
that "--set callbacks+= appends a plugin" \
  'run 0 recipe recipes/r.yaml --set "callbacks+=report" && sed -n "/^callbacks:/,/^[a-z]/p" "$tmp/out" | grep -q "^- report:"'
that "--set callbacks-= removes one, with its parameters" \
  'run 0 recipe recipes/r.yaml --set "callbacks-=save_model" && ! grep -q "save_model" "$tmp/out"'
that "--set KEY VALUE is told so in one line" \
  'run 2 fit recipes/r.yaml --set fit.epochs 1 && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "expected KEY=VALUE in one argument, as in --set fit.epochs=1" "$tmp/err"'

# a failure before the first step leaves nothing behind
that "a prompt too long for the context fails before the first step" \
  "run 1 fit recipes/r.yaml --out early --set \"metrics.0.zero_shot.templates=['a photo of a very very very very very long {label}.']\" && grep -q 'zero_shot.*before_fit.*too long' \"\$tmp/err\""
that "and leaves no folder" '[ ! -e early ]'
that "a plugin failing in before_fit leaves no folder" \
  'run 1 fit recipes/r.yaml --out early --set callbacks.1.fault.fail_event=before_fit && [ ! -e early ]'
that "a monitor no plugin logs fails before the first step, saying what is logged" \
  'run 1 fit recipes/r.yaml --out early --set "callbacks.2={save_model: {monitor: zero_shot_top}}" && grep -q "monitor .zero_shot_top. will not be logged; the run logs train_loss, valid_loss, zero_shot_top1, zero_shot_top5" "$tmp/err" && [ ! -e early ]'
that "a report it cannot write fails before the first step" \
  'run 1 fit recipes/r.yaml --out early --set "callbacks+={report: {fname: nowhere/r.html}}" && grep -q "report: .*nowhere/r.html: cannot write into .*nowhere: no such folder" "$tmp/err" && [ ! -e early ]'
that "one a metric declares is taken" \
  'run 0 fit recipes/r.yaml --out declared --stop-after 1 --set "callbacks+={early_stopping: {monitor: zero_shot_top1}}"'
mkdir -p "$tmp/proj/mine" && echo keep >"$tmp/proj/mine/notes.txt"
that "in a folder that was there, only the run's own files go" \
  'run 1 fit recipes/r.yaml --out mine --set callbacks.1.fault.fail_event=before_fit && [ -f mine/notes.txt ] && [ ! -e mine/recipe.yaml ] && [ ! -e mine/manifest.json ]'
that "and --out can be used again" 'run 0 fit recipes/r.yaml --out mine --stop-after 1'

# a failure after training began leaves the state to continue from
that "a plugin failing after validation fails the run" \
  "run 1 fit recipes/r.yaml --out late --set callbacks.1.fault.fail_event=after_validate --set callbacks.1.fault.fail_once=$tmp/once"
that "saying where the state is and how to continue" \
  'grep -q "failed in after_validate.*the training state after step 2 is in late/state.safetensors: continue with: cliptrain fit --resume late$" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
that "the resumed run ends as one that never failed" \
  'run 0 fit --resume late && losses late >"$tmp/l3" && cmp -s "$tmp/l2" "$tmp/l3" && same_tensors late/model.safetensors "$tmp/elsewhere/whole/model.safetensors"'
that "a failure inside a training step saves no state" \
  'run 1 fit recipes/r.yaml --out inside --stop-after 3 --set callbacks.1.fault.nan_step=3 && ! grep -q "training state after step" "$tmp/err" && [ -d inside ]'
that "a failure at the first step leaves no folder" \
  'run 1 fit recipes/r.yaml --out first --set callbacks.1.fault.nan_step=1 && [ ! -e first ]'
exit $fail
