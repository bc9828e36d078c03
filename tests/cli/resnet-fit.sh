#!/bin/sh
# resnet-fit.sh: a tiny ResNet recipe (model.vision_layers as a list)
# trains in seconds; the resolved recipe holds the stages; a run stopped
# mid-epoch and resumed ends with the same weights and running statistics,
# bit for bit, as a run never stopped (the training state holds the
# buffers); checkpointing and bf16 train; init and bench know the presets;
# bench --profile times the ResNet's own kinds of work; bench/conv_rates
# times its convolutions one by one.
# Prints TAP.
. "$(dirname "$0")/tap.sh"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

cat >"$tmp/rn.yaml" <<'YAML'
seed: 5
model: {preset: rn, image_resolution: 32, vision_width: 8, vision_heads: 2, vision_layers: [1, 2, 1, 1]}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 2, threads: 1}
callbacks:
  - clip_trainer
  - save_model: {at_end: true, fname: final}
YAML

echo "1..13"
that "a tiny ResNet recipe trains" 'run 0 fit "$tmp/rn.yaml" --out "$tmp/a" && [ -s "$tmp/a/final.safetensors" ]'
that "the resolved recipe holds the 4 stages and their sum" 'grep -q "vision_stage2: 2" "$tmp/a/recipe.yaml" && grep -q "vision_layers: 5" "$tmp/a/recipe.yaml" && grep -q "vision_patch_size: 0" "$tmp/a/recipe.yaml"'
that "the weights hold the running statistics" 'grep -aq "visual.layer2.1.bn2.running_var" "$tmp/a/final.safetensors"'
that "stopped after 7 steps (mid-epoch) and resumed" 'run 0 fit "$tmp/rn.yaml" --stop-after 7 --out "$tmp/b" && grep -aq "running_mean" "$tmp/b/state.safetensors" && run 0 fit --resume "$tmp/b"'
that "ends bit-identical to the straight run (buffers included)" 'cmp -s "$tmp/a/final.safetensors" "$tmp/b/final.safetensors"'
that "with activation checkpointing: the same losses, bit for bit" 'run 0 fit "$tmp/rn.yaml" --set model.checkpoint=true --set model.checkpoint_nchunks=2 --out "$tmp/c" && losses "$tmp/a" >"$tmp/la" && losses "$tmp/c" >"$tmp/lc" && cmp -s "$tmp/la" "$tmp/lc"'
that "a list of 3 stages is refused, naming the key" '! run 0 fit "$tmp/rn.yaml" --set "model.vision_layers=[1, 1, 1]" --out "$tmp/d" && grep -q "vision_layers" "$tmp/err"'
that "init --preset rn writes OpenAI-named weights" 'run 0 init --preset rn --out "$tmp/w.safetensors" && grep -aq "visual.attnpool.q_proj.weight" "$tmp/w.safetensors" && grep -aq "visual.layer1.0.downsample.1.running_var" "$tmp/w.safetensors"'
that "bench --preset rn runs" 'run 0 bench --preset rn --batch 4 --steps 1 --threads 1 && grep -q "\"preset\":\"rn\"" "$tmp/out"'
# every ResNet kind of work has a time in bench --profile's profile_ms
rn_kinds() {
  for k in conv_fwd conv_bwd_data conv_bwd_weights im2col batchnorm relu pool attnpool; do
    grep -q "\"profile_ms\":{[^}]*\"$k\":[0-9.]*[1-9]" "$1" || { echo "no time for $k" >>"$tmp/err"; return 1; }
  done
}
that "bench --profile times the ResNet's kinds of work" 'run 0 bench --preset rn --batch 4 --steps 1 --threads 1 --profile && rn_kinds "$tmp/out"'
# bench/conv_rates: a row for each kind of convolution, and the totals
cr="$CT_BUILDDIR/bench/conv_rates"
that "bench/conv_rates times every kind of the rn preset's convolutions" '"$cr" --preset rn --batch 2 --threads 1 --reps 1 >"$tmp/cr" 2>"$tmp/err" && rows=$(grep -c "^| visual\." "$tmp/cr") && [ "$rows" -ge 10 ] && grep -q "^all $rows kinds: [0-9]* ms a step for [0-9.]* GFLOP" "$tmp/cr" && grep -q "^| visual.layer1.0.conv2 | 1 | 16 → 16 | 16x16 | 3, 1 |" "$tmp/cr"'
that "bench/conv_rates --layouts times each kind's products in both layouts" '"$cr" --preset rn --batch 2 --threads 1 --reps 1 --layouts >"$tmp/cr" 2>"$tmp/err" && rows=$(grep -c "^| visual\." "$tmp/cr") && [ "$rows" -ge 10 ] && grep -q "^products a step: rows layout [0-9]* ms ([0-9]*% of sgemm), NCHW [0-9]* ms" "$tmp/cr"'
that "bench/conv_rates refuses a ViT preset" '! "$cr" --preset tiny >"$tmp/cr" 2>"$tmp/err" && grep -q "no ResNet tower" "$tmp/err"'
exit $fail
