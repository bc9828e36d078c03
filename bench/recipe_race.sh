#!/bin/sh
# recipe_race.sh: time to accuracy of several recipes, run side by side.
#
#   bench/recipe_race.sh [--rounds N] [--metric zero_shot_top1] [--target X]
#                        [--set KEY=VALUE]... RECIPE.yaml RECIPE.yaml...
#
# Each round fits every recipe once, one after the other, so that a noisy
# machine hurts them alike.  For each fit it records the wall time of the
# whole command (vocabulary, decoding, training, validation, saving), the
# last epoch's METRIC and, from metrics.jsonl, the time at which METRIC
# first reached TARGET: the wall time up to the end of that epoch's
# validation, estimated as the command's wall time minus the "time" of the
# epochs after it.  TARGET defaults to the first recipe's median final
# METRIC.  A METRIC whose name ends in "loss" must fall to TARGET; any
# other must rise to it.  The table gives medians over the rounds.  Each --set applies to
# every recipe (say, fit.threads=2).
set -e
here=$(cd "$(dirname "$0")" && pwd)
ct=${CLIPTRAIN:-$here/../cliptrain}
py=${PYTHON:-/usr/bin/python3}
rounds=1 metric=zero_shot_top1 target="" sets="" recipes=""
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) rounds=$2; shift 2 ;;
  --metric) metric=$2; shift 2 ;;
  --target) target=$2; shift 2 ;;
  --set) sets="$sets --set $2"; shift 2 ;;
  -*) echo "recipe_race.sh: unknown option $1" >&2; exit 2 ;;
  *) recipes="$recipes $1"; shift ;;
  esac
done
[ -n "$recipes" ] || { echo "usage: recipe_race.sh [options] RECIPE.yaml..." >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

i=0
for r in $(seq "$rounds"); do
  i=0
  for recipe in $recipes; do
    i=$((i + 1))
    out="$tmp/run$i-$r"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086 # the --set options are words
    "$ct" fit "$recipe" --out "$out" $sets >"$tmp/log$i-$r" 2>&1 ||
      { echo "recipe_race.sh: $recipe failed:" >&2; tail -n 3 "$tmp/log$i-$r" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$start $end" >"$out.wall"
  done
done

# per fit: wall final_metric epochs_json_path
"$py" - "$tmp" "$rounds" "$metric" "$target" $recipes <<'EOF'
import json, os, statistics, sys
tmp, rounds, metric, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
recipes = sys.argv[5:]
fits = {}
for i, recipe in enumerate(recipes, 1):
    for r in range(1, rounds + 1):
        out = f"{tmp}/run{i}-{r}"
        start, end = map(float, open(out + ".wall").read().split())
        epochs = [json.loads(l) for l in open(out + "/metrics.jsonl") if l.strip()]
        fits.setdefault(recipe, []).append((end - start, epochs))
def final(epochs):
    return epochs[-1].get(metric)
lower = metric.endswith("loss")  # a loss falls, a metric rises
first = recipes[0]
if target == "":
    target = statistics.median(final(e) for _, e in fits[first])
else:
    target = float(target)
def time_to(wall, epochs):
    for k, e in enumerate(epochs):
        v = e.get(metric)
        if v is not None and (v <= target if lower else v >= target):
            return wall - sum(x.get("time", 0) for x in epochs[k + 1:])
    return None
print(f"{rounds} round(s), target {metric} {'<=' if lower else '>='} {target:.4f}")
print()
print(f"| recipe | epochs | final {metric} | wall s | s to target |")
print("| --- | --- | --- | --- | --- |")
base = None
for recipe in recipes:
    runs = fits[recipe]
    walls = [w for w, _ in runs]
    finals = [final(e) for _, e in runs]
    tts = [time_to(w, e) for w, e in runs]
    reached = [t for t in tts if t is not None]
    tt = statistics.median(reached) if len(reached) == len(tts) else None
    if base is None:
        base = tt
    ratio = f" ({tt / base:.2f}x)" if tt is not None and base else ""
    print(f"| {os.path.basename(recipe)} | {len(runs[0][1])} | {statistics.median(finals):.4f} | "
          f"{statistics.median(walls):.1f} | "
          f"{'not reached (' + str(len(reached)) + '/' + str(len(tts)) + ')' if tt is None else f'{tt:.1f}{ratio}'} |")
EOF
