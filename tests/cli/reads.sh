#!/bin/sh
# reads.sh: every file a user names is read with bounds.  A FIFO, a
# device or a folder where a file is expected (recipe, extends:, CSV, tar
# shard, IDX, vocabulary, weights, training state, texts) is refused at once in one line
# naming it; gzip bombs (an IDX file, a merges file) are stopped at their
# header or a limit, under a memory limit too; CSV limits; and a caption
# too long for the context names its file and row, tar entry or image.
# Prints TAP.
. "$(dirname "$0")/tap.sh"
src="$srcdir/tests/data/sources"
# OpenBLAS's threads reserve memory up front; one thread keeps the
# memory-limited runs below small
OPENBLAS_NUM_THREADS=1
export OPENBLAS_NUM_THREADS

# vlimit: 300 MB of address space, except under AddressSanitizer
# (tests/sanitize.sh), whose shadow memory alone reserves terabytes; the
# limits on what is read are then checked without it
vlimit=300000
[ -n "${ASAN_OPTIONS:-}" ] && vlimit=unlimited
# limited STATUS ARGS...: cliptrain ARGS with $vlimit of address space and
# 20 s at most (a blocked or runaway read fails the test, it does not hang)
limited() {
  want=$1
  shift
  (ulimit -v $vlimit && exec timeout 20 "$ct" "$@") >"$tmp/out" 2>"$tmp/err" </dev/null
  got=$?
  [ "$got" -eq "$want" ] || { echo "exit $got, expected $want" >>"$tmp/err"; return 1; }
}
# one_line PATTERN: the error is one line and matches PATTERN (grep -E)
one_line() { [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -Eq -- "$1" "$tmp/err"; }

mkdir -p "$tmp/csv/img"
for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/csv/img/$k.png"; done
{
  echo 'filepath,title'
  for r in 0 1 2 3 0 1 2 3; do echo "img/$r.png,\"a photo, number $r\""; done
} >"$tmp/csv/train.csv"
cat >"$tmp/base.yaml" <<'YAML'
seed: 5
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
fit: {epochs: 1, threads: 1}
callbacks: [clip_trainer]
YAML
cat >"$tmp/csv.yaml" <<'YAML'
extends: base.yaml
data: {dataset: csv, path: csv/train.csv, valid_path: csv/train.csv, batch_size: 4}
YAML
mkfifo "$tmp/fifo"
printf 'extends: fifo\n' >"$tmp/ext.yaml"

echo "1..26"

# ---------------------------------------------------------------- not regular files
that "a FIFO as the recipe is refused at once, exit 2" \
  'limited 2 fit "$tmp/fifo" && one_line "$tmp/fifo: not a regular file \(a FIFO\)"'
that "a FIFO named by extends: is refused, naming the recipe line" \
  'limited 2 fit "$tmp/ext.yaml" && one_line "ext.yaml:1:[0-9]+: extends: .*fifo: not a regular file \(a FIFO\)"'
that "a folder as the recipe says it is a folder" \
  'limited 2 fit "$tmp/csv" && one_line "$tmp/csv: is a folder, not a recipe file"'
that "a FIFO as the CSV is refused at once" \
  'limited 1 fit "$tmp/csv.yaml" --set data.path="$tmp/fifo" --out "$tmp/r1" && one_line "$tmp/fifo: not a regular file \(a FIFO\), not a CSV file"'
that "/dev/zero as the CSV is refused before reading it" \
  'limited 1 fit "$tmp/csv.yaml" --set data.path=/dev/zero --out "$tmp/r2" && one_line "/dev/zero: not a regular file \(a character device\), not a CSV file"'
that "a folder as the CSV says so" \
  'limited 1 fit "$tmp/csv.yaml" --set data.path="$tmp/csv" --out "$tmp/r3" && one_line "$tmp/csv: is a folder, not a CSV file"'
that "a FIFO as a tar shard is refused at once" \
  'limited 1 fit "$tmp/csv.yaml" --set data.dataset=webdataset --set data.path="$tmp/fifo" --out "$tmp/r4" && one_line "$tmp/fifo: not a regular file \(a FIFO\), not a tar shard"'
that "a folder as a tar shard says so (not: Error reading fd 3)" \
  'limited 1 fit "$tmp/csv.yaml" --set data.dataset=webdataset --set data.path="$tmp/csv" --out "$tmp/r5" && one_line "$tmp/csv: is a folder, not a tar shard"'
that "a file as an image folder says so (not: Not a directory)" \
  'limited 1 fit "$tmp/csv.yaml" --set data.dataset=image_folder --set data.path="$tmp/csv/train.csv" --out "$tmp/r6" && one_line "$tmp/csv/train.csv: is a file, not a folder of images"'
that "/dev/zero as the vocabulary is refused before reading it" \
  'echo hello >"$tmp/in" && (ulimit -v $vlimit && exec timeout 20 "$ct" tokenize --vocab /dev/zero) <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; [ $? -eq 1 ] && one_line "/dev/zero: not a regular file \(a character device\), not a vocabulary file"'
that "a FIFO as model.init weights is refused at once" \
  'limited 1 fit "$tmp/csv.yaml" --set model.init="$tmp/fifo" --out "$tmp/r7" && one_line "$tmp/fifo: not a regular file \(a FIFO\), not a safetensors file"'
that "a FIFO as IDX images is refused at once" \
  'limited 1 fit "$tmp/csv.yaml" --set data.dataset=idx --set data.path="$tmp" --set data.train_images=fifo --out "$tmp/r8" && one_line "$tmp/fifo: not a regular file \(a FIFO\), not an IDX file"'
that "a folder as --texts says so" \
  'limited 1 embed --model "$tmp/nowhere.safetensors" --texts "$tmp/csv" --out "$tmp/e.npy" && one_line "$tmp/csv: is a folder, not a text file"'
that "a FIFO as the training state of --resume is refused at once" \
  'run 0 fit "$srcdir/recipes/synthetic.yaml" --set fit.save_state_every=2 --stop-after 2 --out "$tmp/s" && rm "$tmp/s/state.safetensors" && mkfifo "$tmp/s/state.safetensors" && limited 1 fit --resume "$tmp/s" && grep -q "$tmp/s/state.safetensors: not a regular file (a FIFO), not a safetensors file" "$tmp/err"'
that "and every FIFO is still there, unread" '[ -p "$tmp/fifo" ] && [ -p "$tmp/s/state.safetensors" ]'

# ---------------------------------------------------------------- gzip bombs
# 400 MB of zeros in 0.4 MB: more than the 300 MB the runs may map
head -c 400000000 /dev/zero | gzip -9 >"$tmp/zeros.gz"
cp "$tmp/zeros.gz" "$tmp/bomb.txt.gz"
that "a merges file that inflates past 64 MiB is refused, under a memory limit" \
  '(ulimit -v $vlimit && exec timeout 20 "$ct" tokenize --vocab "$tmp/bomb.txt.gz") <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; [ $? -eq 1 ] && one_line "bomb.txt.gz: decompresses to more than 64 MiB, the limit for a vocabulary file"'

# IDX: one 2x2 image and its label
mkdir -p "$tmp/idx"
printf '\0\0\10\3\0\0\0\1\0\0\0\2\0\0\0\2\1\2\3\4' | gzip >"$tmp/idx/img.gz"
printf '\0\0\10\1\0\0\0\1\0' | gzip >"$tmp/idx/lab.gz"
printf '\0\0\10\1\0\0\0\2\0\0' | gzip >"$tmp/idx/lab2.gz"
cp "$tmp/zeros.gz" "$tmp/idx/zeros.gz"
# a true header, then a second gzip member of 400 MB of zeros
{ printf '\0\0\10\3\0\0\0\1\0\0\0\2\0\0\0\2' | gzip; cat "$tmp/zeros.gz"; } >"$tmp/idx/lying.gz"
cat >"$tmp/idx.yaml" <<'YAML'
extends: base.yaml
data: {dataset: idx, path: idx, train_images: img.gz, train_labels: lab.gz, valid_images: img.gz, valid_labels: lab.gz, batch_size: 1}
YAML
that "the IDX fixture itself trains" 'run 0 fit "$tmp/idx.yaml" --out "$tmp/i0"'
that "an IDX gzip bomb is refused by its header, under a memory limit" \
  'limited 1 fit "$tmp/idx.yaml" --set data.train_images=zeros.gz --out "$tmp/i1" && one_line "zeros.gz: magic 0x00000000 is not IDX u8 images"'
that "a true header followed by 400 MB is inflated no further than the header says" \
  'limited 1 fit "$tmp/idx.yaml" --set data.train_images=lying.gz --out "$tmp/i2" && one_line "lying.gz: decompresses to more than 20 bytes, the limit for the 1 images of 2x2 its header says"'
that "labels that do not match the images are found before either is inflated" \
  'limited 1 fit "$tmp/idx.yaml" --set data.train_images=lying.gz --set data.train_labels=lab2.gz --out "$tmp/i3" && one_line "lab2.gz: 2 labels but .*lying.gz has 1 images"'
# a header that claims 2^32-1 images of 65536x65536
printf '\0\0\10\3\377\377\377\377\0\1\0\0\0\1\0\0' | gzip >"$tmp/idx/huge.gz"
that "a header over the size limit is refused before inflating" \
  'limited 1 fit "$tmp/idx.yaml" --set data.train_images=huge.gz --out "$tmp/i4" && one_line "huge.gz: header says 4294967295 images of 65536x65536 .* over the limit of 2147483648 bytes"'

# ---------------------------------------------------------------- CSV limits, captions
head -c 70000 /dev/zero | tr '\0' a >"$tmp/long"
{ echo 'filepath,title'; echo "img/0.png,short"; echo "img/1.png,$(cat "$tmp/long")"; } >"$tmp/csv/long.csv"
that "a CSV caption over 64 KiB is an error naming the file and line" \
  'run 1 fit "$tmp/csv.yaml" --set data.path="$tmp/csv/long.csv" --out "$tmp/c1" && one_line "long.csv:3: caption of 70000 bytes is longer than the limit of 65536"'
that "a caption too long for the context names the CSV file and row" \
  'run 1 fit "$tmp/csv.yaml" --set model.context_length=4 --set data.shuffle=false --out "$tmp/c2" && one_line "csv/train.csv:[2-9]: caption \"a photo, number [0-3]\" is too long for context length 4"'
mkdir -p "$tmp/wds"
(cd "$tmp/wds" && for k in 0 1; do cp "$src/rgb$k.png" "s$k.png" && echo "a photo, number $k" >"s$k.txt"; done && tar -cf shard.tar s0.png s0.txt s1.png s1.txt && rm -f s?.png s?.txt)
that "a caption too long for the context names the tar shard and entry" \
  'run 1 fit "$tmp/csv.yaml" --set data.dataset=webdataset --set data.path="$tmp/wds/shard.tar" --set data.valid_path="$tmp/wds/shard.tar" --set data.batch_size=1 --set model.context_length=4 --set data.shuffle=false --out "$tmp/c3" && one_line "shard.tar: entry .s[01].txt.: caption \"a photo, number [01]"'
mkdir -p "$tmp/folder/cat" "$tmp/folder/dog"
cp "$src/rgb0.png" "$tmp/folder/cat/0.png"
cp "$src/rgb1.png" "$tmp/folder/dog/1.png"
that "a caption too long for the context names the image it goes with" \
  'run 1 fit "$tmp/csv.yaml" --set data.dataset=image_folder --set data.path="$tmp/folder" --set data.split=random --set data.valid_pct=0.5 --set "data.templates=['"'"'a very long photo of a small {label} indeed'"'"']" --set data.batch_size=1 --set model.context_length=4 --set data.shuffle=false --out "$tmp/c4" && one_line "folder/(cat|dog)/[01].png: caption \"a very long photo"'
that "a tar caption over 64 KiB is an error naming the entry" \
  '(cd "$tmp/wds" && cp "$tmp/long" s2.txt && cp "$src/rgb2.png" s2.png && tar -cf long.tar s2.png s2.txt) && run 1 fit "$tmp/csv.yaml" --set data.dataset=webdataset --set data.path="$tmp/wds/long.tar" --out "$tmp/c5" && one_line "long.tar: entry .s2.txt.: caption of 70000 bytes is longer than the limit of 65536"'
exit $fail
