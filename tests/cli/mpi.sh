#!/bin/sh
# mpi.sh: distributed training with mpiexec -np 2 on this machine.
#
# 2 ranks x batch 8 with ddp + distributed_clip_trainer against 1 process x
# batch 16 with clip_trainer: the same losses, metrics and parameters after
# two epochs.  ddp's zero option against plain ddp (adamw, adam, sgd, fp16
# with grad_clip): the same bits, with half the optimizer state per rank.
# A resume of a zero run: the same bits as an uninterrupted one; a resume
# on another number of ranks: refused.  A rank that dies or hangs: the
# others exit, they do not wait.  Without MPI (distcheck configures
# --without-mpi), a recipe that asks for ddp gets a clear error.
. "$(dirname "$0")/tap.sh"
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs:${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}"
export CLIPTRAIN_PLUGIN_PATH
diff="$builddir/tests/unit/st-diff"
fm=${CT_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
N_MPI=31
echo "1..$((N_MPI + 1))"

recipe() { # NAME BATCH CALLBACKS [EXTRA YAML]
  cat >"$tmp/$1.yaml" <<EOF
seed: 3
data: {dataset: synthetic, n_train: 48, n_valid: 20, batch_size: $2, shuffle: true}
model: {preset: tiny}
fit: {epochs: 2, threads: 1}
callbacks: [$3, {save_model: {at_end: true, fname: final}}]
metrics: [{retrieval_at_k: {k: 5}}, {retrieval_at_k: {k: mean}}, {retrieval_at_k: {k: median}}]
${4:-}
EOF
}

if [ "${CT_HAVE_MPI:-no}" != yes ]; then
  recipe nompi 8 "ddp, distributed_clip_trainer"
  check "without MPI, a recipe that names ddp is refused" 2 "$ct" fit "$tmp/nompi.yaml" --out "$tmp/nompi"
  expect "... saying that this build has no MPI and what to install" "$tmp/err" \
    "built without MPI: install the Debian packages libopenmpi-dev"
  i=1
  while [ $i -lt $N_MPI ]; do skip "cliptrain was built without MPI"; i=$((i + 1)); done
  exit $fail
fi
"$ct" plugins >"$tmp/plugins" 2>&1
if grep -q '^ddp ' "$tmp/plugins" && grep -q '^distributed_clip_trainer ' "$tmp/plugins"; then
  ok "ddp and distributed_clip_trainer are built and listed"
else not_ok "ddp and distributed_clip_trainer are listed" "$tmp/plugins"; fi
if [ -z "${CT_MPIEXEC:-}" ] || ! command -v "$CT_MPIEXEC" >/dev/null; then
  i=0
  while [ $i -lt $N_MPI ]; do skip "no mpiexec (Debian package openmpi-bin)"; i=$((i + 1)); done
  exit $fail
fi

# Open MPI refuses root without these, needs leave to run 2 ranks on
# fewer cores, and its leaks are suppressed under the sanitizers (tap.sh)
mpi_env
mpi2() { timeout 300 "$CT_MPIEXEC" $over -np 2 "$ct" "$@"; }
value() { sed -n "$3p" "$tmp/$1/metrics.jsonl" | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p"; }
# close DESC RUN_A RUN_B NAME TOL: NAME agrees in every epoch, relatively
close() {
  bad=0
  for e in 1 2; do
    a=$(value "$2" "$4" $e) b=$(value "$3" "$4" $e)
    [ -n "$a" ] && [ -n "$b" ] || bad=1
    awk -v a="$a" -v b="$b" -v t="$5" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a;
      if (m < 1) m = 1; exit !(d / m <= t) }' || bad=1
  done
  if [ $bad = 0 ]; then ok "$1"; else
    not_ok "$1" "$tmp/$2/metrics.jsonl" "$tmp/$3/metrics.jsonl"; fi
}
same() { # DESC A B [TOL]: the two model files agree
  if "$diff" "$tmp/$2/final.safetensors" "$tmp/$3/final.safetensors" "" "${4:-0}" >"$tmp/diff"; then
    ok "$1 ($(cat "$tmp/diff"))"
  else not_ok "$1" "$tmp/diff"; fi
}

# ---- ddp + distributed_clip_trainer on 2 ranks = clip_trainer on 1
# (SGD here: Adam divides each gradient by its own size, so that the
# k_proj bias, whose gradient is zero up to rounding, moves by lr whatever
# the rounding noise says, and the two runs part by ~lr there; below.)
sgd="optimizer: {name: sgd, lr: 0.1}"
recipe one 16 clip_trainer "$sgd"
recipe ddp 8 "ddp, distributed_clip_trainer" "$sgd"
check "1 process x batch 16 with clip_trainer trains" 0 "$ct" fit "$tmp/one.yaml" --out "$tmp/one"
check "2 ranks x batch 8 with ddp and distributed_clip_trainer train" 0 \
  mpi2 fit "$tmp/ddp.yaml" --out "$tmp/ddp"
cp "$tmp/err" "$tmp/ddp.err"
same "... to the parameters of 1 process after 2 epochs (6 steps), within 1e-5" one ddp 1e-5
close "... with the same train_loss" one ddp train_loss 1e-5
close "... the same valid_loss (20 samples: the last global batch is 2 + 2)" one ddp valid_loss 1e-5
close "... and the same retrieval metrics over the gathered validation set" one ddp retrieval_at_5 0
close "... (mean rank" one ddp mean_retrieval_ranking 0
close "... and median rank)" one ddp median_retrieval_ranking 0
that "rank 0 alone reports: one ddp line, one metrics row per epoch" \
  '[ "$(grep -c "cliptrain: ddp: 2 ranks" "$tmp/ddp.err")" = 1 ] &&
   [ "$(wc -l <"$tmp/ddp/metrics.jsonl")" = 2 ]'

# ---- zero (ZeRO stage 1)
recipe zero 8 "{ddp: {zero: true}}, distributed_clip_trainer" "$sgd"
check "ddp with zero trains" 0 mpi2 fit "$tmp/zero.yaml" --out "$tmp/zero"
cp "$tmp/err" "$tmp/zero.err"
same "zero gives the same parameters as plain ddp, bit for bit" ddp zero
if awk '/optimizer state per rank/ { s = $0; sub(/.*\(MiB\): /, "", s); split(s, p, "; without zero: ");
        w = p[2] + 0; k = split(p[1], r, ", "); for (i = 1; i <= k; i++) if (r[i] + 0 > 0.55 * w) bad = 1;
        found = (k == 2 && w > 0) } END { exit !(found && !bad) }' "$tmp/zero.err"; then
  ok "zero: each of the 2 ranks holds about half the optimizer state ($(grep -o 'per rank.*' "$tmp/zero.err"))"
else not_ok "zero: each rank holds half the optimizer state" "$tmp/zero.err"; fi
for kind in adamw adam; do
  recipe "d$kind" 8 "ddp, distributed_clip_trainer" "optimizer: {name: $kind}"
  recipe "z$kind" 8 "{ddp: {zero: true}}, distributed_clip_trainer" "optimizer: {name: $kind}"
  if mpi2 fit "$tmp/d$kind.yaml" --out "$tmp/d$kind" >"$tmp/out" 2>"$tmp/err" &&
     mpi2 fit "$tmp/z$kind.yaml" --out "$tmp/z$kind" >"$tmp/out" 2>"$tmp/err"; then
    same "zero with $kind gives ddp's parameters, bit for bit" "d$kind" "z$kind"
  else not_ok "zero with $kind" "$tmp/err"; fi
done
recipe aone 16 clip_trainer "optimizer: {name: adamw}"
if "$ct" fit "$tmp/aone.yaml" --out "$tmp/aone" >"$tmp/out" 2>"$tmp/err"; then
  same "with adamw, 2 ranks end within 1e-4 of 1 process (the k_proj bias, see above)" aone dadamw 1e-4
else not_ok "adamw on 1 process" "$tmp/err"; fi
recipe dfp 8 "ddp, distributed_clip_trainer, {fp16: {precision: fp16}}, {grad_clip: {max_norm: 0.5}}"
recipe zfp 8 "{ddp: {zero: true}}, distributed_clip_trainer, {fp16: {precision: fp16}}, {grad_clip: {max_norm: 0.5}}"
if mpi2 fit "$tmp/dfp.yaml" --out "$tmp/dfp" >"$tmp/out" 2>"$tmp/err" &&
   mpi2 fit "$tmp/zfp.yaml" --out "$tmp/zfp" >"$tmp/out" 2>"$tmp/err"; then
  same "zero with fp16 loss scaling and grad_clip gives ddp's parameters, bit for bit" dfp zfp
else not_ok "zero with fp16 and grad_clip" "$tmp/err"; fi

# ---- resume
check "a zero run stopped after 4 steps leaves a training state" 0 \
  mpi2 fit "$tmp/zero.yaml" --out "$tmp/zres" --stop-after 4
that "... with one optimizer shard per rank" \
  '[ -f "$tmp/zres/state-opt-4.rank-0.safetensors" ] && [ -f "$tmp/zres/state-opt-4.rank-1.safetensors" ]'
check "... which 1 process refuses to resume" 2 "$ct" fit --resume "$tmp/zres"
expect "... saying why" "$tmp/err" "saved by 2 ranks; this run has 1"
check "... and 2 ranks resume" 0 mpi2 fit --resume "$tmp/zres"
same "... to the same parameters as the run that was not stopped, bit for bit" zero zres

# ---- clip_trainer with distributed_clip_trainer: two losses, refused
recipe both 8 "ddp, clip_trainer, distributed_clip_trainer"
if ! mpi2 fit "$tmp/both.yaml" --out "$tmp/both" >"$tmp/out" 2>"$tmp/err" &&
   grep -q "use distributed_clip_trainer instead of clip_trainer, not with it" "$tmp/err"; then
  ok "clip_trainer and distributed_clip_trainer together: the run stops, saying which to keep"
else not_ok "two loss callbacks on 2 ranks" "$tmp/err"; fi

# ---- the fastai/self_supervised CLIP module's variant (gather_with_grad: false)
recipe nograd 8 "ddp, {distributed_clip_trainer: {gather_with_grad: false}}"
if mpi2 fit "$tmp/nograd.yaml" --out "$tmp/nograd" >"$tmp/out" 2>"$tmp/err" &&
   ! "$diff" "$tmp/one/final.safetensors" "$tmp/nograd/final.safetensors" "" 1e-5 >"$tmp/diff"; then
  ok "gather_with_grad: false trains, and its gradient is not the global batch's ($(cat "$tmp/diff"))"
else not_ok "gather_with_grad: false" "$tmp/err" "$tmp/diff"; fi

# ---- zero_shot on Fashion-MNIST: 2 ranks score what 1 does
if [ -f "$fm/t10k-images-idx3-ubyte.gz" ] || [ -f "$fm/t10k-images-idx3-ubyte" ]; then
  classes="['t-shirt/top', trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot]"
  fashion() {
    cat >"$tmp/$1.yaml" <<EOF
seed: 0
data: {dataset: idx, path: $fm, classes: fashion_mnist, templates: ['a photo of a {label}.'],
       vocab_size: 600, n_train: 64, n_valid: 100, batch_size: $2}
model: {preset: tiny, image_resolution: 28, vision_patch_size: 7, context_length: 16,
        vocab_size: 600}
fit: {epochs: 1, threads: 1}
callbacks: [$3]
metrics: [{zero_shot: {class_names: $classes}}]
EOF
  }
  fashion fone 16 clip_trainer
  fashion ftwo 8 "ddp, distributed_clip_trainer"
  if "$ct" fit "$tmp/fone.yaml" --out "$tmp/fone" >"$tmp/out" 2>"$tmp/err" &&
     mpi2 fit "$tmp/ftwo.yaml" --out "$tmp/ftwo" >"$tmp/out" 2>>"$tmp/err" &&
     [ -n "$(value fone zero_shot_top1 1)" ] &&
     [ "$(value fone zero_shot_top1 1)" = "$(value ftwo zero_shot_top1 1)" ]; then
    ok "zero_shot top-1 on 2 ranks equals 1 process's ($(value ftwo zero_shot_top1 1))"
  else not_ok "zero_shot on 2 ranks" "$tmp/err" "$tmp/fone/metrics.jsonl" "$tmp/ftwo/metrics.jsonl"; fi
else
  skip "Fashion-MNIST is not installed (dataset-fashion-mnist)"
fi

# ---- save_model with_opt under zero: every rank its shard
recipe zopt 8 "{ddp: {zero: true}}, distributed_clip_trainer, {save_model: {with_opt: true, fname: best}}"
check "save_model with_opt under zero" 0 mpi2 fit "$tmp/zopt.yaml" --out "$tmp/zopt"
that "... writes the weights once and one optimizer shard per rank" \
  '[ -f "$tmp/zopt/best.safetensors" ] && [ -f "$tmp/zopt/best.opt.rank-0.safetensors" ] &&
   [ -f "$tmp/zopt/best.opt.rank-1.safetensors" ] && [ ! -f "$tmp/zopt/best.opt.safetensors" ]'

# ---- the ResNet tower: BatchNorm on each rank's batch, rank 0's buffers
cat >"$tmp/rn.yaml" <<EOF
seed: 5
model: {preset: rn, image_resolution: 32, vision_width: 8, vision_heads: 2, vision_layers: [1, 2, 1, 1]}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 4}
fit: {epochs: 2, threads: 1}
callbacks: [{ddp: {zero: true}}, distributed_clip_trainer, {save_model: {at_end: true, fname: final}}]
EOF
if mpi2 fit "$tmp/rn.yaml" --out "$tmp/rn" >"$tmp/out" 2>"$tmp/err" &&
   grep -aq "visual.layer2.1.bn2.running_var" "$tmp/rn/final.safetensors"; then
  ok "a ResNet trains on 2 ranks with zero, the ranks' parameters in step (check_sync), running statistics saved"
else not_ok "a ResNet on 2 ranks" "$tmp/err"; fi
if mpi2 fit "$tmp/rn.yaml" --out "$tmp/rn2" --stop-after 5 >"$tmp/out" 2>"$tmp/err" &&
   mpi2 fit --resume "$tmp/rn2" >"$tmp/out" 2>"$tmp/err" &&
   "$diff" "$tmp/rn/final.safetensors" "$tmp/rn2/final.safetensors" "" 0 >"$tmp/diff"; then
  ok "... and stopped mid-epoch and resumed, it ends bit for bit where it would have, buffers included"
else not_ok "a ResNet on 2 ranks resumed" "$tmp/err" "$tmp/diff"; fi

# ---- a rank that dies or hangs: the others exit
recipe die 8 "{ddp: {timeout: 3}}, {distributed_clip_trainer: {timeout: 3}}, {die: {rank: 1, step: 2}}"
start=$(date +%s)
mpi2 fit "$tmp/die.yaml" --out "$tmp/die" >"$tmp/out" 2>"$tmp/err"
rc=$? took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 60 ]; then
  ok "rank 1 killed at step 2: the job exits ($rc) in ${took}s"
else not_ok "a killed rank ends the job (exit $rc after ${took}s)" "$tmp/err"; fi
recipe hang 8 "{ddp: {timeout: 3}}, {distributed_clip_trainer: {timeout: 3}}, {die: {rank: 1, step: 2, hang: true}}"
start=$(date +%s)
mpi2 fit "$tmp/hang.yaml" --out "$tmp/hang" >"$tmp/out" 2>"$tmp/err"
rc=$? took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 60 ] &&
   grep -q 'did not complete within 3 s: another rank has died or hangs' "$tmp/err"; then
  ok "rank 1 stopped (hung) at step 2: rank 0 times out after 3 s and ends the job ($rc, ${took}s)"
else not_ok "a hung rank ends the job (exit $rc after ${took}s)" "$tmp/err"; fi
exit $fail
