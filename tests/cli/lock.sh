#!/bin/sh
# lock.sh: LiT-style locking and layer-wise lr decay from a recipe:
# optimizer.lock_image / lock_text as booleans or as open_clip's options,
# optimizer.layer_decay, `cliptrain fit --print-lr-groups`, one-line errors
# for bad values, and locked tensors that training leaves as they were, on
# one process and on 2 MPI ranks with ddp (which sends no locked group's
# gradients).  Prints TAP.
. "$(dirname "$0")/tap.sh"

cat >"$tmp/base.yaml" <<'YAML'
seed: 3
model: {preset: tiny}
data: {dataset: synthetic, n_train: 32, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 1, threads: 1}
callbacks:
  - clip_trainer
  - save_model: {at_end: true, fname: final}
YAML
cat >"$tmp/lock.yaml" <<'YAML'
extends: base.yaml
optimizer:
  lock_image: {unlocked_groups: 2}
  lock_text: {unlocked_layers: 1}
  layer_decay: {image: 0.5, text: 0.8}
YAML
# row GROUP: the --print-lr-groups rows of GROUP (a fixed string)
row() { awk -v g="$1" '$1 == g' "$tmp/out"; }

echo "1..30"
check "fit --print-lr-groups exits 0" 0 "$ct" fit "$tmp/lock.yaml" --print-lr-groups --out "$tmp/none"
that "... without a run folder" '[ ! -e "$tmp/none" ]'
expect "... a header with the optimizer and lr" "$tmp/out" '^# adamw, lr 0.001, weight decay 0.2'
# tiny: 2 blocks a tower; image decay 0.5: stem 0.25, block0 0.5, block1 1
that "... the image stem at decay^2, locked" \
  'row image.stem | grep -q "^image.stem  *0.25  *0.00025 .* locked$"'
that "... image block 0 at decay^1, locked" \
  'row image.block0 | grep -q "^image.block0  *0.5  *0.0005 .* locked$"'
that "... the last image block with ln_post at the full lr, trained (2 groups unlocked)" \
  'row image.block1+ln_post | grep -q "^image.block1+ln_post  *1  *0.001 .* trains$" && ! row image.block1+ln_post | grep -q locked'
that "... weight decay 0.2 on weights, 0 on biases and gains" \
  'row image.block0 | grep -q " 0.2  *4  *49152  locked$" && row image.block0 | grep -q " 0  *8  *832  locked$"'
that "... text: only the projection trains (1 group unlocked)" \
  'row text.proj | grep -q "trains$" && row text.block1+ln_final | grep -q "locked$" && ! row text.block1+ln_final | grep -q trains'
that "... the text stem at 0.8^2" 'row text.stem | grep -q "^text.stem  *0.64 "'
that "... logit_scale at the full lr" 'row logit_scale | grep -q "^logit_scale  *1  *0.001 .* trains$"'
expect "... backward skips the locked groups" "$tmp/out" 'skips the lowest 2 image groups and the lowest 3 text groups'
check "--print-lr-groups with siglip_trainer" 0 "$ct" fit "$tmp/lock.yaml" --print-lr-groups \
  --set 'callbacks=[siglip_trainer]'
that "... lists the logit_bias it adds, at the full lr" 'row logit_bias | grep -q "^logit_bias  *1  *0.001  *0  *1  *1  trains$"'

check "a ResNet locks by stages, with freeze_bn_stats" 0 "$ct" fit "$tmp/base.yaml" --print-lr-groups \
  --set model.preset=rn --set 'optimizer.lock_image={unlocked_groups: 2, freeze_bn_stats: true}'
that "... layer3 locked, layer4 and the pool trained" \
  'row image.layer3 | grep -q "locked$" && row image.layer4 | grep -q "trains$" && row image.attnpool | grep -q "trains$" && ! row image.layer4 | grep -q locked'

check "recipe writes the mapping as flat keys" 0 "$ct" recipe "$tmp/lock.yaml"
that "... lock_image: true, lock_image_unlocked_groups: 2, lock_text_unlocked_layers: 1" \
  'grep -q "^  lock_image: true$" "$tmp/out" && grep -q "^  lock_image_unlocked_groups: 2$" "$tmp/out" && grep -q "^  lock_text_unlocked_layers: 1$" "$tmp/out"'

# bad values: exit 2, one line naming the file and the key
bad() { # DESCRIPTION PATTERN YAML-LINES...
  d=$1 p=$2
  shift 2
  { echo "extends: base.yaml"; echo "optimizer:"; for l in "$@"; do echo "  $l"; done; } >"$tmp/bad.yaml"
  "$ct" fit "$tmp/bad.yaml" --print-lr-groups >"$tmp/out" 2>"$tmp/err"
  rc=$?
  that "$d: exit 2, one line naming bad.yaml ($p)" \
    '[ $rc -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "bad.yaml:[0-9]*:[0-9]*: .*$p" "$tmp/err"'
}
bad "layer_decay of an unknown tower" "optimizer.layer_decay.audio: .*'image' and 'text'" "layer_decay: {audio: 0.5}"
bad "layer_decay out of range" "optimizer.layer_decay.image: .*(0, 1]" "layer_decay: {image: 1.5}"
bad "a misspelt lock option" "unknown key 'unlocked_group'; did you mean 'unlocked_groups'" "lock_image: {unlocked_group: 2}"
bad "a lock option given twice" "optimizer.lock_image_unlocked_groups: given twice" "lock_image: {unlocked_groups: 2}" "lock_image_unlocked_groups: 1"
bad "blocks and groups together" "optimizer.lock_text_unlocked_layers: give it or optimizer.lock_text_unlocked" "lock_text: true" "lock_text_unlocked: 1" "lock_text_unlocked_layers: 2"

# training leaves the locked tensors bit for bit: two learning rates, the
# same locked tensors, different trained ones
that "two locked fits at different learning rates" \
  'run 0 fit "$tmp/lock.yaml" --out "$tmp/a" && run 0 fit "$tmp/lock.yaml" --set optimizer.lr=0.05 --out "$tmp/b"'
that "... keep the locked image blocks and text tower identical, and train the rest" \
  '"$builddir/tests/unit/st-diff" "$tmp/a/final.safetensors" "$tmp/b/final.safetensors" visual.transformer.resblocks.0. 0 >/dev/null && "$builddir/tests/unit/st-diff" "$tmp/a/final.safetensors" "$tmp/b/final.safetensors" transformer. 0 >/dev/null && ! "$builddir/tests/unit/st-diff" "$tmp/a/final.safetensors" "$tmp/b/final.safetensors" visual.proj 0 >/dev/null && ! "$builddir/tests/unit/st-diff" "$tmp/a/final.safetensors" "$tmp/b/final.safetensors" visual.transformer.resblocks.1. 0 >/dev/null'

# bench times a locked step the same way
check "bench --lock-image 0 --lock-text 1" 0 "$ct" bench --preset tiny --steps 1 --lock-image 0 --lock-text 1
expect "... says so in its JSON" "$tmp/out" '"lock_image":0,"lock_text":1'
check "bench --lock-image -2 is bad usage" 2 "$ct" bench --preset tiny --steps 1 --lock-image -2

# ddp on 2 ranks (zero too) with locked groups, which it does not send:
# the parameters of 1 process, the locked ones bit for bit
cat >"$tmp/one.yaml" <<'YAML'
seed: 3
model: {preset: tiny}
data: {dataset: synthetic, n_train: 32, n_valid: 16, batch_size: 16}
optimizer: {name: sgd, lr: 0.1, lock_image: {unlocked_groups: 2}, lock_text: {unlocked_layers: 1}}
fit: {epochs: 1, threads: 1}
callbacks: [clip_trainer, {save_model: {at_end: true, fname: final}}]
YAML
sed -e 's/batch_size: 16/batch_size: 8/' \
    -e 's/callbacks: \[clip_trainer,/callbacks: [{ddp: {zero: true}}, distributed_clip_trainer,/' \
    "$tmp/one.yaml" >"$tmp/ddp.yaml"
if [ "${CT_HAVE_MPI:-no}" != yes ] || [ -z "${CT_MPIEXEC:-}" ] || ! command -v "$CT_MPIEXEC" >/dev/null; then
  skip "no MPI build or no mpiexec"; skip "no MPI build or no mpiexec"; skip "no MPI build or no mpiexec"
else
  mpi_env
  CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
  export CLIPTRAIN_PLUGIN_PATH
  that "a locked fit on 1 process and on 2 ranks with ddp (zero)" \
    'run 0 fit "$tmp/one.yaml" --out "$tmp/one" && timeout 300 "$CT_MPIEXEC" $over -np 2 "$ct" fit "$tmp/ddp.yaml" --out "$tmp/ddp" >"$tmp/out" 2>"$tmp/err"'
  that "... end with the same parameters within 1e-5" \
    '"$builddir/tests/unit/st-diff" "$tmp/one/final.safetensors" "$tmp/ddp/final.safetensors" "" 1e-5 >"$tmp/err"'
  that "... the locked ones bit for bit" \
    '"$builddir/tests/unit/st-diff" "$tmp/one/final.safetensors" "$tmp/ddp/final.safetensors" visual.transformer.resblocks.0. 0 >"$tmp/err" && "$builddir/tests/unit/st-diff" "$tmp/one/final.safetensors" "$tmp/ddp/final.safetensors" transformer. 0 >"$tmp/err"'
fi
exit $fail
