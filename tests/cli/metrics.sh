#!/bin/sh
# metrics.sh: the metric plugins (retrieval_at_k, zero_shot) in real fits:
# their values reach metrics.jsonl and history.csv, in range; bad
# parameters are refused with a one-line error.  zero_shot runs on Debian's
# Fashion-MNIST (skipped when it is not installed).  Prints TAP.
. "$(dirname "$0")/tap.sh"
CLIPTRAIN_PLUGIN_PATH="$builddir/plugins/.libs"
export CLIPTRAIN_PLUGIN_PATH
fm=${CT_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}





# values RUN NAME: NAME's value on each line of RUN's metrics.jsonl
values() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$tmp/$1.out/metrics.jsonl"; }

# in_range DESCRIPTION RUN NAME LO HI: every epoch logged NAME, a number in [LO, HI]
in_range() {
  desc=$1 run=$2 name=$3 lo=$4 hi=$5
  values "$run" "$name" >"$tmp/vals"
  epochs=$(wc -l <"$tmp/$run.out/metrics.jsonl")
  if [ "$(wc -l <"$tmp/vals")" -eq "$epochs" ] &&
     awk -v lo="$lo" -v hi="$hi" '!($1 ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ && $1 + 0 >= lo && $1 + 0 <= hi) { bad = 1 }
                                  END { exit bad }' "$tmp/vals"; then
    ok "$desc"
  else not_ok "$desc: $name not in [$lo, $hi] every epoch" "$tmp/$run.out/metrics.jsonl"; fi
}

# synthetic NAME METRICS: a tiny synthetic recipe (20 validation samples,
# the last batch short)
synthetic() {
  cat >"$tmp/$1.yaml" <<EOF
model: {preset: tiny}
data: {n_train: 32, n_valid: 20, batch_size: 8}
fit: {epochs: 2, threads: 1}
callbacks: [clip_trainer]
metrics: [$2]
EOF
}

# fashion NAME N_TRAIN METRIC [CAPTIONS]: Fashion-MNIST, a tiny model
fashion() {
  cat >"$tmp/$1.yaml" <<EOF
seed: 0
data: {dataset: idx, path: $fm, classes: fashion_mnist, templates: ['a photo of a {label}.'],
       captions: {${4:-}}, vocab_size: 600, n_train: $2, n_valid: 256, batch_size: 64}
model: {preset: tiny, image_resolution: 28, vision_patch_size: 7, context_length: 16,
        vocab_size: 600}
fit: {epochs: 2, threads: 2}
callbacks: [clip_trainer]
metrics: [$3]
EOF
}

fit() { check "$1" "$2" "$ct" fit "$tmp/$3.yaml" --out "$tmp/$3.out"; }

classes="['t-shirt/top', trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot]"

echo "1..40"

# ---- retrieval_at_k, the fastai/self_supervised CLIP module's names
synthetic seed "{retrieval_at_k: {k: 5}}, {retrieval_at_k: {k: mean}}, {retrieval_at_k: {k: median}}"
fit "retrieval_at_k at 5, mean and median" 0 seed
lines "two epochs recorded" "$tmp/seed.out/metrics.jsonl" 2
in_range "retrieval_at_5 in [0, 1]" seed retrieval_at_5 0 1
in_range "mean_retrieval_ranking in [1, 20]" seed mean_retrieval_ranking 1 20
in_range "median_retrieval_ranking in [1, 20]" seed median_retrieval_ranking 1 20
if values seed median_retrieval_ranking | grep -Evq '^[0-9]+(\.0)?$'; then
  not_ok "median_retrieval_ranking is a whole number" "$tmp/seed.out/metrics.jsonl"
else ok "median_retrieval_ranking is a whole number"; fi
expect "history.csv has the metrics' columns" "$tmp/seed.out/history.csv" \
  '^epoch,retrieval_at_5,mean_retrieval_ranking,median_retrieval_ranking,'

# ---- open_clip's names with a direction
synthetic t2i "{retrieval_at_k: {k: 5, direction: text_to_image}}, {retrieval_at_k: {k: mean, direction: text_to_image}}, {retrieval_at_k: {k: median, direction: text_to_image}}, {retrieval_at_k: {k: 20, direction: image_to_text}}"
fit "retrieval_at_k text_to_image" 0 t2i
in_range "text_to_image_R@5 in [0, 1]" t2i 'text_to_image_R@5' 0 1
in_range "text_to_image_mean_rank in [1, 20]" t2i text_to_image_mean_rank 1 20
in_range "text_to_image_median_rank in [1, 20]" t2i text_to_image_median_rank 1 20
in_range "image_to_text_R@20 is 1 with 20 samples" t2i 'image_to_text_R@20' 1 1

# ---- bad parameters
synthetic badk "{retrieval_at_k: {k: fifty}}"
fit "k fifty is refused" "1|2" badk
expect "the error names k" "$tmp/err" "k: 'fifty' is not an integer >= 1, 'mean' or 'median'"
lines "the error is one line" "$tmp/err" 1
synthetic zerok "{retrieval_at_k: {k: 0}}"
fit "k 0 is refused" "1|2" zerok
# item 4 of the metrics: a k above the validation set's 20 samples is
# refused in before_fit, before any training step
synthetic bigk "{retrieval_at_k: {k: 21}}"
fit "k 21 with 20 validation samples is refused" 1 bigk
expect "... naming the plugin and the set's size" "$tmp/err" \
  "retrieval_at_k: k 21 is larger than the validation set \(20 samples\)"
lines "... in one line" "$tmp/err" 1
if [ ! -s "$tmp/bigk.out/metrics.jsonl" ]; then ok "... before training"
else not_ok "k 21 trained first" "$tmp/bigk.out/metrics.jsonl"; fi
synthetic baddir "{retrieval_at_k: {direction: image_to_txt}}"
fit "an unknown direction is refused" 2 baddir
expect "did you mean 'image_to_text'" "$tmp/err" "did you mean 'image_to_text'"

# ---- zero_shot's refusals
check "cliptrain plugins lists both" 0 "$ct" plugins
if grep -Eq '^retrieval_at_k ' "$tmp/out" && grep -Eq '^zero_shot ' "$tmp/out"; then
  ok "retrieval_at_k and zero_shot are listed"
else not_ok "retrieval_at_k or zero_shot not listed" "$tmp/out"; fi
synthetic noclass "zero_shot"
fit "zero_shot without class_names is refused" 2 noclass
expect "the error names class_names" "$tmp/err" "missing required key 'class_names'"
synthetic synth "{zero_shot: {class_names: [a, b]}}"
fit "zero_shot on synthetic data fails" 1 synth
expect "the error asks for labelled data" "$tmp/err" "zero_shot needs labelled data"
if [ ! -s "$tmp/synth.out/metrics.jsonl" ]; then ok "zero_shot fails before training"
else not_ok "zero_shot on synthetic data trained first" "$tmp/synth.out/metrics.jsonl"; fi

# ---- zero_shot on Fashion-MNIST
if [ -f "$fm/t10k-labels-idx1-ubyte.gz" ]; then
  fashion zs 512 "{zero_shot: {class_names: $classes, templates: ['a photo of a {label}.', 'a {label}.']}}, {retrieval_at_k: {k: 5}}, {retrieval_at_k: {k: 5, hit: exact}}"
  fit "zero_shot on Fashion-MNIST" 0 zs
  # 256 validation captions, 10 distinct: an exact pair ranks behind the
  # equal captions before it (at most 5 of a class can be in the top 5:
  # <= 50/256); with hit: class any sample of the class is a hit
  in_range "idx data: retrieval_at_k's auto hit is class (class_retrieval_at_5)" zs class_retrieval_at_5 0 1
  in_range "hit: exact logs retrieval_at_5, low on repeated captions" zs retrieval_at_5 0 0.196
  values zs class_retrieval_at_5 >"$tmp/cls"
  values zs retrieval_at_5 | paste "$tmp/cls" - >"$tmp/ce"
  if [ "$(wc -l <"$tmp/ce")" -eq 2 ] &&
     awk '!($1 + 0 > 0 && $1 + 0 >= 2 * $2) { bad = 1 } END { exit bad }' "$tmp/ce"; then
    ok "class_retrieval_at_5 at least twice retrieval_at_5"
  else not_ok "class recall not above exact recall" "$tmp/zs.out/metrics.jsonl"; fi
  in_range "zero_shot_top1 in [0, 1]" zs zero_shot_top1 0 1
  values zs zero_shot_top1 >"$tmp/top1"
  values zs zero_shot_top5 | paste "$tmp/top1" - >"$tmp/both"
  if [ "$(wc -l <"$tmp/both")" -eq 2 ] &&
     awk '!($2 != "" && $2 + 0 >= $1 + 0 && $2 + 0 <= 1) { bad = 1 } END { exit bad }' "$tmp/both"; then
    ok "zero_shot_top5 >= zero_shot_top1, at most 1"
  else not_ok "zero_shot_top5 < zero_shot_top1" "$tmp/zs.out/metrics.jsonl"; fi
  # a class missing from class_names: its validation captions match nothing
  fashion nobag 64 "{zero_shot: {class_names: ['t-shirt/top', trouser, pullover, dress, coat, sandal, shirt, sneaker, ankle boot], top_k: 3}}"
  fit "zero_shot with a class missing fails" 1 nobag
  expect "the error names the caption and the label template" "$tmp/err" \
    "caption 'a photo of a bag \.' is none of the classes' captions; zero_shot needs labelled validation data"
  # labels mapped through data.captions, as the data maps them; top_k 3
  fashion mapped 64 "{zero_shot: {class_names: $classes, top_k: 3}}" "trouser: pants, bag: handbag"
  fit "zero_shot maps class_names through data.captions" 0 mapped
  in_range "top_k 3 logs zero_shot_top3" mapped zero_shot_top3 0 1
  if grep -q zero_shot_top5 "$tmp/mapped.out/metrics.jsonl"; then
    not_ok "top_k 3 logs no zero_shot_top5" "$tmp/mapped.out/metrics.jsonl"
  else ok "top_k 3 logs no zero_shot_top5"; fi
else
  for i in 1 2 3 4 5 6 7 8 9 10 11; do skip "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"; done
fi
exit $fail
