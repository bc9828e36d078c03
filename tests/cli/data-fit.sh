#!/bin/sh
# data-fit.sh: training from real data sources end to end: image folders
# (grandparent and random splits), CSV, webdataset shards, the corrupt
# image policy, clear errors for bad data, and batches that do not depend
# on the number of loader threads.  Prints TAP.
. "$(dirname "$0")/tap.sh"
src="$srcdir/tests/data/sources"
losses() { sed 's/,"time":[^,}]*//' "$1/metrics.jsonl"; }

# an image folder: train/ and valid/ with two classes of tiny PNGs
for split in train valid; do
  for cls in cat dog; do
    mkdir -p "$tmp/folder/$split/$cls"
    for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/folder/$split/$cls/$k.png"; done
    cp "$src/gray.png" "$tmp/folder/$split/$cls/g.png"
    cp "$src/photo.jpg" "$tmp/folder/$split/$cls/p.jpg"
  done
done
cat >"$tmp/base.yaml" <<'YAML'
seed: 5
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
optimizer: {lr: 1.0e-3}
fit: {epochs: 2, threads: 1}
callbacks: [clip_trainer, {save_model: {at_end: true}}]
YAML
cat >"$tmp/folder.yaml" <<'YAML'
extends: base.yaml
data:
  dataset: image_folder
  path: folder
  templates: ['a photo of a {label}.', 'a {label}.']
  random_resized_crop: true
  hflip: true
  batch_size: 4
YAML

echo "1..23"
that "an image folder trains" 'run 0 fit "$tmp/folder.yaml" --out "$tmp/a"'
that "the learned vocabulary is saved with the run" '[ -s "$tmp/a/vocab.txt" ] && head -1 "$tmp/a/vocab.txt" | grep -q "^#version"'
that "the checkpoint carries the learned vocabulary and the recipe" \
  'head -c 65536 "$tmp/a/model.safetensors" | grep -aq "\"vocab\":\"#version: 0.2" && head -c 65536 "$tmp/a/model.safetensors" | grep -aq "\"recipe\":\"seed: 5"'
that "loader threads do not change the batches" \
  'run 0 fit "$tmp/folder.yaml" --set data.workers=0 --out "$tmp/b" && run 0 fit "$tmp/folder.yaml" --set data.workers=3 --set data.prefetch=4 --out "$tmp/c" && losses "$tmp/a" >"$tmp/la" && losses "$tmp/b" >"$tmp/lb" && losses "$tmp/c" >"$tmp/lc" && cmp -s "$tmp/la" "$tmp/lb" && cmp -s "$tmp/la" "$tmp/lc"'
that "a random split trains" 'run 0 fit "$tmp/folder.yaml" --set data.path="$tmp/folder/train" --set data.split=random --set data.valid_pct=0.25 --out "$tmp/d"'

cp "$src/corrupt.png" "$tmp/folder/train/cat/bad.png"
that "a corrupt image fails the run by default" 'run 1 fit "$tmp/folder.yaml" --out "$tmp/e"'
that "and the error names the file" 'grep -q "folder/train/cat/bad.png" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
that "with corrupt: skip it trains" 'run 0 fit "$tmp/folder.yaml" --set data.corrupt=skip --set data.shuffle=false --out "$tmp/f"'
that "and counts what it skipped" 'grep -q "skipped 1 unreadable image" "$tmp/err"'
rm "$tmp/folder/train/cat/bad.png"
# 8 bad images among 20: each counted once per epoch, whatever the workers
for cls in cat dog; do
  for k in 0 1 2 3; do cp "$src/corrupt.png" "$tmp/folder/train/$cls/bad$k.png"; done
done
for w in 0 1 3; do
  that "8 corrupt images are counted 8 times a training epoch with data.workers=$w" \
    'run 0 fit "$tmp/folder.yaml" --set data.corrupt=skip --set data.workers=$w --set data.prefetch=4 --out "$tmp/skip$w" && [ "$(grep -c "epoch [01]: training: skipped 8 unreadable images$" "$tmp/err")" -eq 2 ] && [ "$(grep -c "skipped" "$tmp/err")" -eq 2 ]'
done
rm "$tmp/folder/train/cat/bad"?.png "$tmp/folder/train/dog/bad"?.png

that "a missing folder is an error naming it" 'run 1 fit "$tmp/folder.yaml" --set data.path=nowhere --out "$tmp/g" && grep -q "nowhere" "$tmp/err"'

# CSV with quoting, paths relative to the file
mkdir -p "$tmp/csv/img"
for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/csv/img/$k.png"; done
{
  echo 'filepath,title'
  for r in 0 1 2 3 0 1 2 3; do echo "img/$r.png,\"a photo, number $r\""; done
} >"$tmp/csv/train.csv"
cat >"$tmp/csv.yaml" <<'YAML'
extends: base.yaml
data: {dataset: csv, path: csv/train.csv, valid_path: csv/train.csv, batch_size: 4}
YAML
that "a CSV of paths and captions trains" 'run 0 fit "$tmp/csv.yaml" --out "$tmp/h" && [ "$(wc -l <"$tmp/h/metrics.jsonl")" -eq 2 ]'
echo 'img/0.png,too,many' >>"$tmp/csv/train.csv"
that "a CSV row with the wrong number of columns names the file and row" \
  'run 1 fit "$tmp/csv.yaml" --out "$tmp/i" && grep -q "train.csv:10:" "$tmp/err"'
sed -i '$d' "$tmp/csv/train.csv" # drop the bad row again

# webdataset shards made with tar(1)
mkdir -p "$tmp/wds"
for s in 0 1; do
  (cd "$tmp/wds" && for k in 0 1 2 3; do
    cp "$src/rgb$k.png" "s$s-$k.png"
    echo "shard $s sample $k" >"s$s-$k.txt"
  done && tar -cf "shard-00$s.tar" s$s-*.png s$s-*.txt && rm -f s$s-*.png s$s-*.txt)
done
cat >"$tmp/wds.yaml" <<'YAML'
extends: base.yaml
data: {dataset: webdataset, path: 'wds/shard-{000..001}.tar', valid_path: wds/shard-000.tar, batch_size: 4}
YAML
that "webdataset shards with a brace pattern train" 'run 0 fit "$tmp/wds.yaml" --out "$tmp/j"'
head -c 3000 "$tmp/wds/shard-001.tar" >"$tmp/wds/cut.tar"
that "a truncated shard is an error, not a crash" 'run 1 fit "$tmp/wds.yaml" --set data.path="$tmp/wds/cut.tar" --out "$tmp/k" && grep -q "cut.tar" "$tmp/err" && ! grep -q "No such file" "$tmp/err"'

that "a caption longer than the context is an error naming it" \
  'run 1 fit "$tmp/csv.yaml" --set model.context_length=4 --out "$tmp/l" && grep -q "a photo, number" "$tmp/err"'
that "with truncate: true it trains" 'run 0 fit "$tmp/csv.yaml" --set model.context_length=4 --set data.truncate=true --out "$tmp/m"'

fm=/usr/share/datasets/fashion-mnist
if [ -f "$fm/t10k-images-idx3-ubyte.gz" ]; then
  that "Fashion-MNIST (IDX) trains from the default recipe" \
    'run 0 fit "$srcdir/recipes/fashion_mnist.yaml" --set data.n_train=256 --set data.n_valid=128 --set fit.epochs=1 --out "$tmp/n"'
  that "its loader reports images per second" \
    'run 0 bench --loader "$srcdir/recipes/fashion_mnist.yaml" --loader-batches 20 && grep -q "\"images_per_s\"" "$tmp/out"'
  that "the fast recipe trains with SigLIP and patch dropout, then turns dropout off halfway" \
    'run 0 fit "$srcdir/recipes/fashion_mnist_fast.yaml" --set data.n_train=256 --set data.n_valid=128 --set fit.epochs=2 --out "$tmp/fast" && grep -q "unmasked_tuning: patch dropout off from training step 4$" "$tmp/out" "$tmp/err"'
  that "... its model has SigLIP's logit_bias" \
    'grep -q logit_bias "$tmp/fast/model.safetensors"'
else
  skip "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"
  skip "Fashion-MNIST is not installed"
  skip "Fashion-MNIST is not installed"
  skip "Fashion-MNIST is not installed"
fi
exit $fail
