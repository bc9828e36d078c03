#!/bin/sh
# report.sh: the report plugin writes a self-contained HTML report with
# SVG charts (loss, lr, one per recorded value) and a table; a run of one
# batch still draws.  Where Debian's chromium is installed, the report is
# rendered headless: the charts survive parsing and the screenshot is not
# blank.  Prints TAP.
. "$(dirname "$0")/tap.sh"
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
export CLIPTRAIN_PLUGIN_PATH

echo "1..24"

cat >"$tmp/run.yaml" <<EOF
seed: 1
model: {preset: tiny}
data: {dataset: synthetic, n_train: 64, n_valid: 32, batch_size: 8}
fit: {epochs: 2, threads: 1}
callbacks: [clip_trainer, report]
metrics: [{retrieval_at_k: {k: 5}}]
EOF
check "a 2-epoch fit with the report" 0 "$ct" fit "$tmp/run.yaml" --out "$tmp/run"
html=$tmp/run/report.html
that "report.html exists" '[ -s "$html" ]'
for c in loss lr train_loss valid_loss retrieval_at_5; do
  expect "the report has the $c chart" "$html" "<svg class=\"chart\" data-name=\"$c\""
done
that "every chart has a title" \
  '[ "$(grep -c "<svg class=\"chart\"" "$html")" -eq "$(grep -A1 "<svg class=\"chart\"" "$html" | grep -c "^<title>")" ]'
expect "the loss chart has a legend for raw and smoothed" "$html" '>smoothed</text>'
that "the table has a row per epoch" '[ "$(grep -c "^<tr><td>[01]</td>" "$html")" -eq 2 ]'
expect "the header names the run folder" "$html" '<h1>Training report: run</h1>'
if ! grep -Eq 'https?://' "$html"; then ok "no http:// or https:// references"
else not_ok "the report refers to the network" "$html"; fi
if ! grep -Eqi '<script|<link|<img|<iframe' "$html"; then ok "no scripts or external resources"
else not_ok "the report has scripts or external resources"; fi
if command -v xmllint >/dev/null 2>&1; then
  # libxml2's HTML parser knows no SVG tags: complaints about those are fine
  xmllint --html --noout "$html" 2>&1 | grep -v 'Tag [a-z]* invalid' | grep -E 'error|warning' >"$tmp/xml"
  if [ ! -s "$tmp/xml" ] && xmllint --noout "$html" 2>"$tmp/err"; then
    ok "the report parses as HTML and as well-formed XML"
  else not_ok "xmllint finds errors" "$tmp/xml" "$tmp/err"; fi
else skip "xmllint is not installed"; fi
leftovers=$(ls -A "$tmp/run" | grep -c '^report\.html.')
that "no temporary files are left behind" '[ "$leftovers" -eq 0 ]'

# a single epoch of a single batch, written only after the fit, elsewhere
cat >"$tmp/one.yaml" <<EOF
model: {preset: tiny}
data: {dataset: synthetic, n_train: 8, n_valid: 8, batch_size: 8}
fit: {epochs: 1, threads: 1}
callbacks: [clip_trainer, {report: {fname: one.html, every_epoch: false}}]
EOF
check "one batch, fname one.html, every_epoch false" 0 "$ct" fit "$tmp/one.yaml" --out "$tmp/one"
that "one.html exists, report.html does not" '[ -s "$tmp/one/one.html" ] && [ ! -e "$tmp/one/report.html" ]'
sed -n '/data-name="loss"/,/<\/svg>/p' "$tmp/one/one.html" >"$tmp/oneloss"
expect "a single batch still draws a point" "$tmp/oneloss" '<circle r="[0-9.]+" cx="[0-9.]+" cy="[0-9.]+"/>'
sed -n '/data-name="train_loss"/,/<\/svg>/p' "$tmp/one/one.html" >"$tmp/oneepoch"
expect "a single epoch still draws a point" "$tmp/oneepoch" '<circle r="[0-9.]+" cx="[0-9.]+"'

# ---- rendered in headless chromium
chromium=/usr/bin/chromium
chrome() {
  timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$tmp/profile" "$@"
}
if [ -x "$chromium" ]; then
  chrome --dump-dom "file://$html" >"$tmp/dom" 2>"$tmp/err"
  that "chromium dumps the DOM" '[ -s "$tmp/dom" ]'
  charts=$(grep -o '<svg class="chart"' "$tmp/dom" | wc -l)
  that "the DOM has the 5 svg charts" '[ "$charts" -eq 5 ]'
  # each chart's data: a <path d="M..."> or <polyline points="...">, non-empty
  tr '\n' ' ' <"$tmp/dom" | sed 's/<svg /\n<svg /g' | grep '^<svg class="chart"' >"$tmp/svgs"
  drawn=$(grep -Ec '<path fill="none"[^>]* d="M[0-9.]+,[0-9.]+|<polyline[^>]* points="[0-9]' "$tmp/svgs")
  that "every chart in the DOM has non-empty path data" '[ "$drawn" -eq 5 ]'
  expect "the loss chart in the DOM has a path of 16 batches" "$tmp/svgs" \
    'data-name="loss".*d="M[0-9.]+,[0-9.]+(L[0-9.]+,[0-9.]+){15}"'
  chrome --screenshot="$tmp/shot.png" --window-size=1200,1600 "file://$html" \
    >"$tmp/out" 2>"$tmp/err"
  size=$(wc -c <"$tmp/shot.png" 2>/dev/null || echo 0)
  that "the screenshot is a PNG larger than a blank page ($size bytes)" \
    '[ "$(head -c 4 "$tmp/shot.png" | tail -c 3)" = PNG ] && [ "$size" -gt 20000 ]'
else
  for c in "chromium dumps the DOM" "the DOM has the 5 svg charts" \
    "every chart in the DOM has non-empty path data" "the loss chart in the DOM has a path" \
    "the screenshot is larger than a blank page"; do
    skip "chromium is not installed"
  done
fi
exit $fail
