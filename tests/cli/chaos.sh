#!/bin/sh
# chaos.sh: a run killed with SIGKILL at random moments (seeded), and
# resumed with --resume after each kill, ends bit-identical to a run that
# was never interrupted; after every kill each file of the run folder is
# whole (tests/unit/check-run).  The run saves its training state every few
# steps (fit.save_state_every), so a kill loses at most those steps.
#   CT_CHAOS_SEED (default 1) and CT_CHAOS_KILLS (default 5) vary it.
# Prints TAP.
. "$(dirname "$0")/tap.sh"
check_run="$builddir/tests/unit/check-run"
seed=${CT_CHAOS_SEED:-1}
kills=${CT_CHAOS_KILLS:-5}

cat >"$tmp/r.yaml" <<'YAML'
seed: 5
model: {preset: tiny}
data: {dataset: synthetic, n_train: 1600, n_valid: 32, batch_size: 8}
optimizer: {lr: 1.0e-3}
schedule: {name: one_cycle}
fit: {epochs: 4, threads: 1, save_state_every: 7}
callbacks:
  - clip_trainer
  - save_model: {monitor: valid_loss}
  - save_model: {at_end: true, fname: final}
  - csv_logger
YAML
# the losses and metrics without the time column
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }
csv() { cut -d, -f1-3 "$1/log.csv"; }
now() { date +%s.%N; }

echo "1..$((kills + 11))"
t0=$(now)
that "an uninterrupted run" 'run 0 fit "$tmp/r.yaml" --out "$tmp/ref"'
t1=$(now)
# kill delays: seeded, between 0.2 s and a tenth of the whole run, so that
# every kill lands before the run could end
delays=$(awk -v s="$seed" -v k="$kills" -v a="$t0" -v b="$t1" 'BEGIN {
  srand(s); d = (b - a) / 10; if (d < 0.4) d = 0.4
  for (i = 0; i < k; i++) printf "%.2f\n", 0.2 + rand() * (d - 0.2) }')
echo "# uninterrupted: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; kill delays (seed $seed): $(echo $delays)"

landed=0
i=0
for d in $delays; do
  i=$((i + 1))
  if [ $i -eq 1 ]; then
    "$ct" fit "$tmp/r.yaml" --out "$tmp/c" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    # the first kill waits for a first state, so that there is one to resume
    j=0
    while [ ! -s "$tmp/c/state.safetensors" ] && [ $j -lt 600 ]; do sleep 0.05; j=$((j + 1)); done
  else
    "$ct" fit --resume "$tmp/c" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
  fi
  sleep "$d"
  if kill -KILL $pid 2>/dev/null; then landed=$((landed + 1)); fi
  wait $pid
  st=$?
  that "kill $i after ${d}s (exit $st): every file in the run folder is whole" \
    '"$check_run" "$tmp/c" >"$tmp/files" 2>&1 || { cat "$tmp/files" >>"$tmp/err"; false; }'
done
grep -h "temporary file" "$tmp/files" | sed 's/^/# left: /'
that "the kills landed while the run was going ($landed of $kills)" '[ $landed -eq $kills ]'
that "--resume finishes the run" 'run 0 fit --resume "$tmp/c"'
that "the final weights are the uninterrupted run's, bit for bit" \
  'cmp "$tmp/ref/final.safetensors" "$tmp/c/final.safetensors" >>"$tmp/err" 2>&1'
that "so is the best model save_model kept" \
  'cmp "$tmp/ref/model.safetensors" "$tmp/c/model.safetensors" >>"$tmp/err" 2>&1'
that "metrics.jsonl holds the same rows, each once" \
  'losses "$tmp/ref" >"$tmp/a" && losses "$tmp/c" >"$tmp/b" && cmp "$tmp/a" "$tmp/b" >>"$tmp/err" 2>&1'
that "so does csv_logger's log.csv" \
  'csv "$tmp/ref" >"$tmp/a" && csv "$tmp/c" >"$tmp/b" && cmp "$tmp/a" "$tmp/b" >>"$tmp/err" 2>&1'

# A kill after rows were written past the last state: stop at step 5 (the
# state), resume, kill once epoch 0's row is out, resume again.  Epoch 0
# runs twice; its rows must be written once.
sed 's/save_state_every: 7/save_state_every: 0/' "$tmp/r.yaml" >"$tmp/late.yaml"
that "a run stopped at step 5" 'run 0 fit "$tmp/late.yaml" --stop-after 5 --out "$tmp/late"'
"$ct" fit --resume "$tmp/late" >"$tmp/out" 2>"$tmp/err" &
pid=$!
j=0
while [ ! -s "$tmp/late/metrics.jsonl" ] && [ $j -lt 1200 ]; do sleep 0.01; j=$((j + 1)); done
kill -KILL $pid 2>/dev/null
wait $pid
that "killed after writing epoch 0's rows, with its state still at step 5" \
  '[ "$(wc -l <"$tmp/late/metrics.jsonl")" -ge 1 ] && [ -s "$tmp/late/state-opt-5.safetensors" ]'
that "resumed from step 5 to the end" 'run 0 fit --resume "$tmp/late"'
that "metrics.jsonl and log.csv hold each epoch once, as the uninterrupted run's" \
  'losses "$tmp/ref" >"$tmp/a" && losses "$tmp/late" >"$tmp/b" && cmp "$tmp/a" "$tmp/b" >>"$tmp/err" 2>&1 && csv "$tmp/ref" >"$tmp/a" && csv "$tmp/late" >"$tmp/b" && cmp "$tmp/a" "$tmp/b" >>"$tmp/err" 2>&1'
exit $fail
