#!/bin/sh
# cli.sh: the cliptrain program's commands, exit statuses and error lines.
# Prints TAP.
. "$(dirname "$0")/tap.sh"

# one_line DESCRIPTION: the last command wrote exactly one line to stderr
one_line() {
  n=$((n + 1))
  if [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
    echo "ok $n - $1"
  else
    echo "not ok $n - $1: stderr has $(wc -l <"$tmp/err") lines"
    sed 's/^/# /' "$tmp/err"
    fail=1
  fi
}

echo "1..43"
check "--version" 0 "$ct" --version
expect "--version names the program" "$tmp/out" '^cliptrain [0-9]+\.[0-9]+\.[0-9]+$'
check "--help" 0 "$ct" --help
expect "--help lists bench" "$tmp/out" 'bench'
cp "$tmp/out" "$tmp/help"
check "no command is bad usage" 2 "$ct"
check "unknown command is bad usage" 2 "$ct" frobnicate
one_line "unknown command: one error line"
expect "unknown command is named" "$tmp/err" "unknown command 'frobnicate'"

check "bench on the tiny preset" 0 "$ct" bench --preset tiny --batch 4 --steps 2 --threads 1
for field in preset batch threads samples_per_s step_ms gflop_per_s peak_rss_mib; do
  expect "bench prints $field" "$tmp/out" "\"$field\":"
done
check "bench with an unknown preset" 2 "$ct" bench --preset vitb99
one_line "unknown preset: one error line"
check "bench with --batch 0" 2 "$ct" bench --preset tiny --batch 0
check "init writes weights" 0 "$ct" init --preset tiny --seed 1 --out "$tmp/w.safetensors"
check "init into a missing folder fails" 1 "$ct" init --preset tiny --out "$tmp/no/such/dir/w.safetensors"
expect "the error names the file" "$tmp/err" "no/such/dir/w.safetensors"

# cliptrain recipe --keys describes every key that a resolved recipe holds:
# those a fit writes into its recipe.yaml (cliptrain recipe RECIPE prints
# the same), for each schedule (each has its own keys) and a ResNet model
expect "--help lists recipe" "$tmp/help" '^  recipe '
check "recipe --keys" 0 "$ct" recipe --keys
cp "$tmp/out" "$tmp/keys"
printf 'model: {preset: rn}\ndata: {n_train: 8, batch_size: 8}\n' >"$tmp/keys.yaml"
: >"$tmp/resolved"
for s in const one_cycle flat_cos warmup_cosine const_cooldown; do
  "$ct" recipe "$tmp/keys.yaml" --set schedule.name=$s >>"$tmp/resolved" 2>>"$tmp/err" || echo "# $s failed" >>"$tmp/resolved"
done
that "recipe RECIPE resolves the recipe with each schedule" '! grep -q "^# " "$tmp/resolved"'
awk '/^[a-z_]+:/ { sec = $1; sub(/:.*/, "", sec); if (sec == "seed") print "seed"; next }
     /^  [a-z_0-9]+:/ && sec ~ /^(data|model|optimizer|schedule|fit|output)$/ {
       k = $1; sub(/:.*/, "", k); print sec "." k }' "$tmp/resolved" | sort -u >"$tmp/written"
that "the resolved recipes hold the keys of every section" '[ "$(wc -l <"$tmp/written")" -ge 80 ]'
missing=$(while read -r k; do grep -q "^  $k " "$tmp/keys" || printf ' %s' "$k"; done <"$tmp/written")
if [ -z "$missing" ]; then ok "recipe --keys describes every key of the resolved recipes"
else not_ok "recipe --keys lacks:$missing" "$tmp/keys"; fi
expect "recipe --keys gives a key's type, default, doc and range" "$tmp/keys" \
  '^  data\.batch_size +int +default 16 +samples per batch \[1, 1048576\]$'
expect "recipe --keys says the defaults another key chooses" "$tmp/keys" \
  '^  optimizer\.lr +double +default 5e-4 .*by name: adam 1e-3, sgd 1e-2$'
printf 'seed: 1\nfit: {epoch: 2}\n' >"$tmp/bad.yaml"
check "recipe RECIPE with an unknown key is bad usage" 2 "$ct" recipe "$tmp/bad.yaml"
expect "... naming file:line:col as fit does" "$tmp/err" 'bad.yaml:2:7: fit: unknown key .epoch.; did you mean .epochs.'
check "recipe without --keys or a recipe is bad usage" 2 "$ct" recipe
# docs/training.md's --set example: a list item holding { } must be quoted,
# and the error for an unquoted one says so
that "--set with a quoted list item holding {label} works" \
  "run 0 recipe '$srcdir/recipes/synthetic.yaml' --set \"data.templates=['a {label}.']\" && grep -q \"^  - 'a {label}.'\$\" '$tmp/out'"
that "--set with an unquoted one: one line that says to quote it" \
  "run 2 recipe '$srcdir/recipes/synthetic.yaml' --set 'data.templates=[a {label}.]' && [ \$(wc -l <'$tmp/err') -eq 1 ] && grep -q \"quote an item that holds them, e.g. --set \\\"data.templates=\" '$tmp/err'"
that "fit --out \"\" is bad usage (exit 2) saying the path is empty" \
  'run 2 fit "$srcdir/recipes/synthetic.yaml" --out "" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "^cliptrain: fit: --out \"\": an empty path names no file or folder$" "$tmp/err"'
that "so are eval, embed and init --out \"\", and fit --resume \"\"" \
  'run 2 eval "$srcdir/recipes/synthetic.yaml" --model "$tmp/w.safetensors" --out "" && grep -q "eval: --out \"\": an empty path" "$tmp/err" && run 2 embed --model "$tmp/w.safetensors" --texts - --out "" && run 2 init --preset tiny --out "" && grep -q "init: --out \"\": an empty path" "$tmp/err" && run 2 fit --resume "" && grep -q "fit: --resume \"\": an empty path" "$tmp/err"'

# ---- the locale: text as UTF-8 whatever the locale, numbers always with '.'
that "--set with non-ASCII text works in the C locale" \
  '(LC_ALL=C && export LC_ALL && run 0 recipe "$srcdir/recipes/synthetic.yaml" --set "data.templates=[\"café {label}\"]") && grep -q "café {label}" "$tmp/out"'
that "a --set value that is not UTF-8 is bad usage, in one line" \
  'run 2 recipe "$srcdir/recipes/synthetic.yaml" --set "data.templates=[\"caf$(printf "\351") {label}\"]" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "recipe: --set: the value is not UTF-8 text" "$tmp/err"'
mkdir "$tmp/loc"
if localedef -i de_DE -f UTF-8 "$tmp/loc/de_DE.UTF-8" >/dev/null 2>&1 &&
  [ "$(LOCPATH="$tmp/loc" LC_ALL=de_DE.UTF-8 locale decimal_point 2>/dev/null)" = "," ]; then
  that "with decimal commas (de_DE.UTF-8), fit writes '.' decimals in recipe.yaml and metrics.jsonl" \
    '(LOCPATH="$tmp/loc" LC_ALL=de_DE.UTF-8 && export LOCPATH LC_ALL && run 0 fit "$srcdir/recipes/synthetic.yaml" --set data.n_train=16 --set data.n_valid=8 --set data.batch_size=8 --set fit.epochs=2 --set fit.threads=1 --set optimizer.lr=0.0005 --stop-after 3 --out "$tmp/dé") && grep -q "^  lr: 0.0005$" "$tmp/dé/recipe.yaml" && grep -q "[0-9]\.[0-9]" "$tmp/dé/metrics.jsonl" && ! grep -q "[0-9],[0-9]" "$tmp/dé/metrics.jsonl"'
  that "and prints a folder's non-ASCII name as it is in a UTF-8 locale" \
    'grep -q "state is in $tmp/dé/state.safetensors" "$tmp/err"'
  that "eval prints its NAME VALUE lines and JSON with '.' decimals there too" \
    '(LOCPATH="$tmp/loc" LC_ALL=de_DE.UTF-8 && export LOCPATH LC_ALL && run 0 eval "$srcdir/recipes/synthetic.yaml" --set data.n_valid=8 --set fit.threads=1 --model "$tmp/dé") && grep -q "^valid_loss [0-9]*\.[0-9]*$" "$tmp/err" && ! grep -q "[0-9],[0-9]" "$tmp/out" "$tmp/err"'
else
  skip "no de_DE locale can be built here (localedef)"
  skip "no de_DE locale can be built here (localedef)"
  skip "no de_DE locale can be built here (localedef)"
fi

# ---- long values are quoted cut: "... (N bytes)"
awk 'BEGIN { printf "model: {preset: "; for (i = 0; i < 100000; i++) printf "x"; print "}" }' >"$tmp/bigpreset.yaml"
that "a 100 kB preset value gives a one-line error of readable length, saying its size" \
  'run 2 recipe "$tmp/bigpreset.yaml" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && [ "$(wc -c <"$tmp/err")" -lt 400 ] && grep -q "unknown preset .x*\.\.\. (100000 bytes)." "$tmp/err"'
that "so does a long unknown key given by --set" \
  'run 2 recipe "$srcdir/recipes/synthetic.yaml" --set "fit.$(awk "BEGIN { for (i = 0; i < 5000; i++) printf \"k\" }")=1" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && [ "$(wc -c <"$tmp/err")" -lt 600 ] && grep -q "(5000 bytes)" "$tmp/err"'
exit $fail
