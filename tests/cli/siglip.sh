#!/bin/sh
# siglip.sh: the siglip_trainer plugin from the command line.  A recipe
# that swaps clip_trainer for siglip_trainer trains, and its model saves
# logit_bias (recorded in the metadata); a fresh model starts at the
# paper's t = log 10 and b = -10 (or the plugin's init_* values), CLIP
# weights from model.init keep their logit_scale and get init_logit_bias;
# logit_scale is clamped to max_logit_scale;
# the saved model loads in eval (the same valid_loss), zeroshot and embed;
# a stopped run resumes to the bits of one never stopped; the chunk size
# does not change a bit; a second loss callback and a model without
# logit_bias are refused.  With MPI, ddp and siglip_trainer on 2 ranks
# of batch 8 give the parameters and losses of 1 process of batch 16.
# Prints TAP.  Float bits in hex: -10 c1200000, log 10 40135d8e, 1.5
# 3fc00000, -4 c0800000, -7 c0e00000, 1.25 3fa00000.
. "$(dirname "$0")/tap.sh"
diff="$builddir/tests/unit/st-diff"
echo "1..23"

recipe() { # NAME BATCH CALLBACKS [EXTRA YAML]
  cat >"$tmp/$1.yaml" <<EOF
seed: 3
data: {dataset: synthetic, n_train: 48, n_valid: 20, batch_size: $2, shuffle: true}
model: {preset: tiny}
fit: {epochs: 2, threads: 1}
callbacks: [$3, {save_model: {at_end: true, fname: final}}]
metrics: [{retrieval_at_k: {k: 5}}]
${4:-}
EOF
}
# scalar FILE NAME: the bits of the 1-element F32 tensor NAME as 8 hex
# digits (a little-endian host), or nothing
scalar() {
  hl=$(head -c 8 "$1" | od -An -tu8 | tr -d ' ')
  at=$(head -c $((8 + hl)) "$1" | tr -d '\000' | grep -ao "\"$2\": *{[^}]*}" |
    sed -n 's/.*"data_offsets": *\[\([0-9]*\),.*/\1/p')
  [ -n "$at" ] && od -An -tx4 -j $((8 + hl + at)) -N4 "$1" | tr -d ' '
}
value() { sed -n "$3p" "$1/metrics.jsonl" | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p"; }

that "plugins siglip_trainer documents every parameter and the logit_bias it adds" \
  'run 0 plugins siglip_trainer && for p in init_logit_scale init_logit_bias max_logit_scale chunk; do grep -Eq "^  $p +(double|int) +default [^ ]+ +[a-z]" "$tmp/out" || exit 1; done && grep -q "^model: *adds the parameter logit_bias" "$tmp/out"'

recipe sig 16 siglip_trainer
check "a recipe with siglip_trainer instead of clip_trainer trains" 0 "$ct" fit "$tmp/sig.yaml" --out "$tmp/sig"
m="$tmp/sig/final.safetensors"
that "... its model saves logit_bias, and its metadata says so" \
  '[ -n "$(scalar "$m" logit_bias)" ] && grep -aq "\"config.logit_bias\": *\"1\"" "$m"'
that "... and its losses are finite and fall" \
  'a=$(value "$tmp/sig" train_loss 1) b=$(value "$tmp/sig" train_loss 2) && awk -v a="$a" -v b="$b" "BEGIN { exit !(a > 0 && b > 0 && b < a) }"'
check "callbacks-=clip_trainer, callbacks+=siglip_trainer trains the shipped synthetic recipe" 0 \
  "$ct" fit "$srcdir/recipes/synthetic.yaml" --set 'callbacks-=clip_trainer' --set 'callbacks+=siglip_trainer' --set fit.epochs=1 --out "$tmp/ship"

recipe lr0 16 siglip_trainer "optimizer: {name: sgd, lr: 0}"
that "a fresh model starts at t = log 10 and b = -10" \
  'run 0 fit "$tmp/lr0.yaml" --out "$tmp/lr0" && [ "$(scalar "$tmp/lr0/final.safetensors" logit_bias)" = c1200000 ] && [ "$(scalar "$tmp/lr0/final.safetensors" logit_scale)" = 40135d8e ]'
recipe init 16 "{siglip_trainer: {init_logit_scale: 1.5, init_logit_bias: -4}}" "optimizer: {name: sgd, lr: 0}"
that "... or at init_logit_scale and init_logit_bias" \
  'run 0 fit "$tmp/init.yaml" --out "$tmp/init" && [ "$(scalar "$tmp/init/final.safetensors" logit_bias)" = c0800000 ] && [ "$(scalar "$tmp/init/final.safetensors" logit_scale)" = 3fc00000 ]'
recipe clamp 16 "{siglip_trainer: {max_logit_scale: 1.25}}"
that "logit_scale is clamped to max_logit_scale after every step" \
  'run 0 fit "$tmp/clamp.yaml" --out "$tmp/clamp" && [ "$(scalar "$tmp/clamp/final.safetensors" logit_scale)" = 3fa00000 ]'
recipe clipinit 16 "{siglip_trainer: {init_logit_bias: -7}}" "optimizer: {name: sgd, lr: 0}"
sed -i "s|^model: {preset: tiny}|model: {preset: tiny, init: $tmp/clip.safetensors}|" "$tmp/clipinit.yaml"
that "CLIP weights from model.init keep their logit_scale and get init_logit_bias" \
  'run 0 init --preset tiny --out "$tmp/clip.safetensors" && run 0 fit "$tmp/clipinit.yaml" --out "$tmp/ci" && [ "$(scalar "$tmp/ci/final.safetensors" logit_bias)" = c0e00000 ] && [ -n "$(scalar "$tmp/clip.safetensors" logit_scale)" ] && [ "$(scalar "$tmp/ci/final.safetensors" logit_scale)" = "$(scalar "$tmp/clip.safetensors" logit_scale)" ]'
cp "$m" "$tmp/sig.safetensors"
sed -i "s|init: $tmp/clip.safetensors|init: $tmp/sig.safetensors|" "$tmp/clipinit.yaml"
that "... and SigLIP weights from model.init keep their logit_bias" \
  'run 0 fit "$tmp/clipinit.yaml" --out "$tmp/si" && [ -n "$(scalar "$m" logit_bias)" ] && [ "$(scalar "$m" logit_bias)" != c1200000 ] && [ "$(scalar "$tmp/si/final.safetensors" logit_bias)" = "$(scalar "$m" logit_bias)" ]'

that "eval loads the model and gives the run's last valid_loss" \
  'run 0 eval "$tmp/sig.yaml" --model "$m" && [ "$(sed -n "s/.*\"valid_loss\" *: *\([^,} ]*\).*/\1/p" "$tmp/out")" = "$(value "$tmp/sig" valid_loss 2)" ]'
# zeroshot and embed need a tokenizer: a model of captioned images
src="$srcdir/tests/data/sources"
for cls in cat dog; do
  for split in train valid; do
    mkdir -p "$tmp/folder/$split/$cls"
    for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/folder/$split/$cls/$k.png"; done
  done
done
cat >"$tmp/img.yaml" <<EOF
seed: 5
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
fit: {epochs: 1, threads: 1}
callbacks: [siglip_trainer, {save_model: {at_end: true}}]
data: {dataset: image_folder, path: $tmp/folder, batch_size: 4}
EOF
that "zeroshot loads a SigLIP model" \
  'run 0 fit "$tmp/img.yaml" --out "$tmp/img" && run 0 zeroshot --model "$tmp/img/model.safetensors" --labels "cat, dog" "$tmp/folder/valid/cat/0.png" && grep -q "0.png: " "$tmp/out"'
that "embed loads it" \
  'printf "a cat\na dog\n" >"$tmp/texts" && run 0 embed --model "$tmp/img/model.safetensors" --texts "$tmp/texts" --out "$tmp/e.safetensors" && [ -s "$tmp/e.safetensors" ]'
recipe clip 16 clip_trainer
that "a CLIP recipe evaluates it too (clip_trainer leaves logit_bias alone)" \
  'run 0 eval "$tmp/clip.yaml" --model "$m"'
that "eval of CLIP weights with siglip_trainer is refused: no logit_bias (exit 1)" \
  'run 1 eval "$tmp/sig.yaml" --model "$tmp/clip.safetensors" && grep -q "the model has no logit_bias" "$tmp/err"'

that "a run stopped after 4 steps resumes to the bits of the run never stopped" \
  'run 0 fit "$tmp/sig.yaml" --out "$tmp/stop" --stop-after 4 && run 0 fit --resume "$tmp/stop" && cmp -s "$m" "$tmp/stop/final.safetensors"'
recipe chunk 16 "{siglip_trainer: {chunk: 3}}"
that "chunk 3 gives the bits of chunk 64" \
  'run 0 fit "$tmp/chunk.yaml" --out "$tmp/chunk" && "$diff" "$m" "$tmp/chunk/final.safetensors" "" 0 >"$tmp/err" 2>&1 && [ "$(value "$tmp/chunk" valid_loss 2)" = "$(value "$tmp/sig" valid_loss 2)" ]'
recipe clipsig 16 clip_trainer
sed -i "s|^model: {preset: tiny}|model: {preset: tiny, init: $tmp/sig.safetensors}|" "$tmp/clipsig.yaml"
that "a CLIP recipe that starts from SigLIP weights is told to list siglip_trainer (exit 2)" \
  'run 2 fit "$tmp/clipsig.yaml" --out "$tmp/cs" && grep -q "tensor .logit_bias. is SigLIP.s, and this model has no logit_bias: list siglip_trainer" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
recipe ga 8 "siglip_trainer, {grad_accumulation: {n: 2}}"
that "grad_accumulation (CLIP's loss) with siglip_trainer is refused (exit 1)" \
  'run 1 fit "$tmp/ga.yaml" --out "$tmp/ga" && grep -q "grad_accumulation accumulates CLIP.s contrastive loss" "$tmp/err"'
recipe two 16 "clip_trainer, siglip_trainer"
that "a second loss callback is refused (exit 1)" \
  'run 1 fit "$tmp/two.yaml" --out "$tmp/two" && grep -q "siglip_trainer.*another callback already computed this batch.s loss" "$tmp/err"'

# ---- 2 ranks with ddp = 1 process with the global batch
if [ "${CT_HAVE_MPI:-no}" != yes ] || [ -z "${CT_MPIEXEC:-}" ] || ! command -v "$CT_MPIEXEC" >/dev/null; then
  for i in 1 2 3; do skip "no MPI build or no mpiexec"; done
  exit $fail
fi
mpi_env
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
export CLIPTRAIN_PLUGIN_PATH
sgd="optimizer: {name: sgd, lr: 0.1}"
recipe one 16 siglip_trainer "$sgd"
recipe ddp 8 "ddp, {siglip_trainer: {chunk: 3}}" "$sgd"
check "2 ranks x batch 8 with ddp and siglip_trainer train" 0 \
  timeout 300 "$CT_MPIEXEC" $over -np 2 "$ct" fit "$tmp/ddp.yaml" --out "$tmp/ddp"
that "... to the parameters of 1 process x batch 16, logit_bias included, within 1e-5" \
  'run 0 fit "$tmp/one.yaml" --out "$tmp/one" && "$diff" "$tmp/one/final.safetensors" "$tmp/ddp/final.safetensors" "" 1e-5 >"$tmp/err" 2>&1 && [ -n "$(scalar "$tmp/ddp/final.safetensors" logit_bias)" ]'
that "... with the same train_loss and valid_loss in both epochs" \
  'for k in train_loss valid_loss; do for e in 1 2; do a=$(value "$tmp/one" $k $e) b=$(value "$tmp/ddp" $k $e); awk -v a="$a" -v b="$b" "BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != \"\" && d <= 1e-5 * (a < 0 ? -a : a)) }" || exit 1; done; done'
exit $fail
