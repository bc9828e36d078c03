#!/bin/sh
# resume.sh: a run stopped early (--stop-after, --time-limit, SIGTERM) and
# resumed with --resume ends with bit-identical weights and losses to a
# run that was never stopped, mid-epoch too; callback states come back.
# Prints TAP.
. "$(dirname "$0")/tap.sh"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

cat >"$tmp/r.yaml" <<'YAML'
seed: 11
model: {preset: tiny}
data: {dataset: synthetic, n_train: 48, n_valid: 16, batch_size: 8}
optimizer: {lr: 1.0e-3}
fit: {epochs: 3, threads: 1}
callbacks:
  - clip_trainer
  - save_model: {monitor: valid_loss}
  - save_model: {at_end: true, fname: final}
  - csv_logger
metrics:
  - retrieval_at_k: {k: 5}
YAML

echo "1..20"
that "a straight run" 'run 0 fit "$tmp/r.yaml" --out "$tmp/straight"'
that "--stop-after 5 stops mid-epoch, exit 0" 'run 0 fit "$tmp/r.yaml" --stop-after 5 --out "$tmp/s"'
that "and says how to resume" 'grep -q "stopped after 5 training steps.*cliptrain fit --resume" "$tmp/err" && [ -s "$tmp/s/state.safetensors" ] && [ ! -e "$tmp/s/final.safetensors" ]'
that "--resume with another --stop-after stops again in the next epoch" 'run 0 fit --resume "$tmp/s" --stop-after 9 && grep -q "stopped after 9" "$tmp/err"'
that "--resume finishes the run" 'run 0 fit "$tmp/r.yaml" --resume "$tmp/s"'
that "the weights equal the straight run's, bit for bit" 'cmp -s "$tmp/straight/final.safetensors" "$tmp/s/final.safetensors"'
that "so does the best model save_model kept" 'cmp -s "$tmp/straight/model.safetensors" "$tmp/s/model.safetensors"'
that "the losses and metrics equal the straight run's" 'losses "$tmp/straight" >"$tmp/a" && losses "$tmp/s" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b"'
that "csv_logger continued its file" '[ "$(wc -l <"$tmp/s/log.csv")" -eq 4 ]'

that "a stop at an epoch boundary resumes too" 'run 0 fit "$tmp/r.yaml" --stop-after 6 --out "$tmp/e" && run 0 fit --resume "$tmp/e" && cmp -s "$tmp/straight/final.safetensors" "$tmp/e/final.safetensors"'

cp "$tmp/r.yaml" "$tmp/r2.yaml"
that "a changed recipe does not resume" 'run 0 fit "$tmp/r2.yaml" --stop-after 3 --out "$tmp/c" && sed -i "s/lr: 0.001/lr: 0.002/; s/lr: 1.0e-3/lr: 2.0e-3/" "$tmp/c/recipe.yaml" && run 2 fit --resume "$tmp/c" && grep -q "belongs to another recipe" "$tmp/err"'

# --threads: checked as fit.threads is; a resume may take another count
# (results do not depend on it) without changing the recorded recipe
that "--threads 5000 is refused as fit.threads is, and writes no folder" \
  'run 2 fit "$tmp/r.yaml" --threads 5000 --out "$tmp/th0" && grep -q "^cliptrain: --threads 5000: fit.threads: 5000 is out of range \[1, 1024\]$" "$tmp/err" && [ ! -e "$tmp/th0" ]'
that "a run with --threads 2 stopped after 5 steps resumes with --threads 1" \
  'run 0 fit "$tmp/r.yaml" --threads 2 --stop-after 5 --out "$tmp/th" && cp "$tmp/th/recipe.yaml" "$tmp/th.yaml" && run 0 fit --resume "$tmp/th" --threads 1 && cmp -s "$tmp/th.yaml" "$tmp/th/recipe.yaml"'
that "to the weights of a run with --threads 2 never stopped, bit for bit" \
  'run 0 fit "$tmp/r.yaml" --threads 2 --out "$tmp/th2" && cmp -s "$tmp/th2/final.safetensors" "$tmp/th/final.safetensors"'

that "--time-limit stops a run, resumably" 'run 0 fit "$tmp/r.yaml" --set data.n_train=4000 --set fit.epochs=1 --time-limit 1s --out "$tmp/t" && [ -s "$tmp/t/state.safetensors" ] && grep -q "continue with" "$tmp/err"'

# a plugin's saved state of 300 MB (tests/plugins/big_state.so): a U8
# tensor in the state's body, not base64 in its header (100 MB at most)
plugins=${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}
if [ -f "$plugins/big_state.so" ]; then
  cat >"$tmp/big.yaml" <<YAML
seed: 5
model: {preset: tiny}
data: {dataset: synthetic, n_train: 32, n_valid: 8, batch_size: 8}
fit: {epochs: 1, threads: 1}
plugin_path: [$plugins]
callbacks: [clip_trainer, {big_state: {bytes: 300000000, seed: 7}}]
YAML
  that "a 300 MB plugin state is saved" \
    'run 0 fit "$tmp/big.yaml" --stop-after 2 --out "$tmp/big" && [ "$(wc -c <"$tmp/big/state.safetensors")" -gt 300000000 ]'
  that "in the file's body: the header stays small" \
    '[ "$(head -c 4 "$tmp/big/state.safetensors" | od -An -tu4 | tr -d " ")" -lt 1000000 ]'
  that "and resumes, every byte checked by the plugin" \
    'run 0 fit --resume "$tmp/big" && grep -q "big_state: restored 300000000 bytes" "$tmp/err"'
  rm -rf "$tmp/big"
else
  for i in 1 2 3; do skip "tests/plugins/big_state.so is not built ($plugins)"; done
fi

# SIGTERM: the run stops after the current step, saves, exits 0
cat >"$tmp/long.yaml" <<'YAML'
seed: 2
model: {preset: tiny}
data: {dataset: synthetic, n_train: 20000, n_valid: 16, batch_size: 8}
fit: {epochs: 1, threads: 1}
callbacks: [clip_trainer, {save_model: {at_end: true, fname: final}}]
YAML
"$ct" fit "$tmp/long.yaml" --out "$tmp/sig" >"$tmp/out" 2>"$tmp/err" &
pid=$!
sleep 2
kill -TERM $pid
wait $pid
st=$?
that "SIGTERM ends the run with a resumable state (exit 0)" '[ $st -eq 0 ] && [ -s "$tmp/sig/state.safetensors" ] && grep -q "continue with" "$tmp/err"'
that "which resumes to the weights of a run never stopped" 'run 0 fit --resume "$tmp/sig" && run 0 fit "$tmp/long.yaml" --out "$tmp/sig2" && cmp -s "$tmp/sig/final.safetensors" "$tmp/sig2/final.safetensors"'
exit $fail
