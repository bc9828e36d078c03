#!/bin/sh
# commands.sh: embed, zeroshot and retrieve on a tiny model trained here:
# the .safetensors and .npy outputs, the learned vocabulary from the
# checkpoint, the printed results, clear errors; and, when python3 with
# torch is there, a bare PyTorch state dict (no config metadata).  Prints TAP.
. "$(dirname "$0")/tap.sh"
src="$srcdir/tests/data/sources"

for split in train valid; do
  for cls in cat dog; do
    mkdir -p "$tmp/folder/$split/$cls"
    for k in 0 1 2 3; do cp "$src/rgb$k.png" "$tmp/folder/$split/$cls/$k.png"; done
    cp "$src/gray.png" "$tmp/folder/$split/$cls/g.png"
    cp "$src/photo.jpg" "$tmp/folder/$split/$cls/p.jpg"
  done
done
cat >"$tmp/r.yaml" <<'YAML'
seed: 5
model: {preset: tiny, image_resolution: 16, vision_patch_size: 8, vocab_size: 600, context_length: 12}
optimizer: {lr: 1.0e-3}
fit: {epochs: 2, threads: 1}
callbacks: [clip_trainer, {save_model: {at_end: true}}]
data:
  dataset: image_folder
  path: folder
  templates: ['a photo of a {label}.', 'a {label}.']
  batch_size: 4
YAML
m="$tmp/run/model.safetensors"
v="$tmp/folder/valid"
# header TEXT of a safetensors file (its first 64 KiB)
header() { head -c 65536 "$1" | tr -d '\000'; }
# unit_rows FILE OFFSET E: every E floats from byte OFFSET have norm 1
unit_rows() {
  od -An -v -tf4 -j"$2" "$1" | awk -v E="$3" '
    { for (i = 1; i <= NF; i++) { s += $i * $i; if (++k % E == 0) { if (s < 0.9999 || s > 1.0001) bad = 1; s = 0; rows++ } } }
    END { exit bad || k % E || rows == 0 }'
}
# row FILE OFFSET E I: the I-th row of E floats from byte OFFSET
row() { od -An -v -tf4 -j$(($2 + $4 * $3 * 4)) -N$(($3 * 4)) "$1" | tr -s ' ' '\n' | sed '/^$/d'; }
st_data() { echo $((8 + $(od -An -tu8 -N8 "$1"))); }

echo "1..39"
that "a tiny model trains (the fixture)" 'run 0 fit "$tmp/r.yaml" --out "$tmp/run"'

# ---- embed images
that "embed --images DIR writes safetensors" \
  'run 0 embed --model "$m" --images "$v" --out "$tmp/img.safetensors"'
header "$tmp/img.safetensors" >"$tmp/h"
expect "its tensor 'features' is F32 (12, 64)" "$tmp/h" '"features":\{"dtype":"F32","shape":\[12,64\]'
expect "its metadata says kind image" "$tmp/h" '"kind":"image"'
that "and gives the 12 images' paths in sorted order" \
  '[ "$(grep -o "$v/[a-z]*/[0-9a-z]*\.[a-z]*" "$tmp/h" | tr "\n" " ")" = "$(find "$v" -type f | LC_ALL=C sort | tr "\n" " ")" ]'
that "and the model file's sha256" 'grep -q "\"model_sha256\":\"$(sha256sum "$m" | cut -d" " -f1)\"" "$tmp/h"'
that "its rows are unit vectors" 'unit_rows "$tmp/img.safetensors" "$(st_data "$tmp/img.safetensors")" 64'

that "embed --images FILE DIR --batch 4 writes .npy" \
  'run 0 embed --model "$m" --images "$v/cat/0.png" "$v/dog" --out "$tmp/img.npy" --batch 4'
that "the .npy starts with NumPy's magic and version 1.0" \
  '[ "$(head -c 8 "$tmp/img.npy" | od -An -tx1 | tr -d " ")" = 934e554d50590100 ]'
that "its header says <f4, C order, shape (7, 64), padded to 64 bytes" \
  '[ "$(od -An -tu2 -j8 -N2 "$tmp/img.npy" | tr -d " ")" = 118 ] && head -c 128 "$tmp/img.npy" | tail -c 118 | grep -q "^{.descr.: .<f4., .fortran_order.: False, .shape.: (7, 64), } *$"'
that "its size is the header and 7 x 64 float32" '[ "$(wc -c <"$tmp/img.npy")" -eq $((128 + 7 * 64 * 4)) ]'
that "its rows are unit vectors" 'unit_rows "$tmp/img.npy" 128 64'
that "the sidecar lists the 7 images in order" \
  '[ "$(cat "$tmp/img.npy.ids.txt" | tr "\n" " ")" = "$v/cat/0.png $(find "$v/dog" -type f | LC_ALL=C sort | tr "\n" " ")" ]'
that "the batch size does not change the features" \
  'row "$tmp/img.npy" 128 64 1 >"$tmp/a" && row "$tmp/img.safetensors" "$(st_data "$tmp/img.safetensors")" 64 6 >"$tmp/b" && paste "$tmp/a" "$tmp/b" | awk "{ d = \$1 - \$2; if (d > 1e-5 || d < -1e-5) bad = 1 } END { exit bad || NR != 64 }"'

# ---- embed texts
printf 'a photo of a cat.\na photo of a dog.\na dog.\n' >"$tmp/texts.txt"
that "embed --texts uses the checkpoint's learned vocabulary" \
  'run 0 embed --model "$m" --texts "$tmp/texts.txt" --out "$tmp/txt.safetensors"'
that "and writes 3 text features" \
  'header "$tmp/txt.safetensors" | grep -q "\"kind\":\"text\"" && header "$tmp/txt.safetensors" | grep -q "\"shape\":\[3,64\]"'
that "--vocab with the run's vocab.txt gives the same file" \
  'run 0 embed --model "$m" --vocab "$tmp/run/vocab.txt" --texts "$tmp/texts.txt" --out "$tmp/txt2.safetensors" && cmp -s "$tmp/txt.safetensors" "$tmp/txt2.safetensors"'

# ---- zeroshot
that "zeroshot prints one line per image" \
  'run 0 zeroshot --model "$m" --labels "cat, dog" "$v/cat/0.png" "$v/dog/p.jpg" && [ "$(wc -l <"$tmp/out")" -eq 2 ]'
that "each names its image and both labels, probabilities descending and summing to 1" \
  'awk -F": " "{ n = split(\$2, a, \", \"); s = 0; p = 2; l = \"\"; for (i = 1; i <= n; i++) { split(a[i], b, \" \"); if (b[2] > p) bad = 1; p = b[2]; s += b[2]; l = l b[1] } if (n != 2 || s < 0.999 || s > 1.001 || (l != \"catdog\" && l != \"dogcat\")) bad = 1 } END { exit bad }" "$tmp/out" && grep -q "^$v/cat/0.png: " "$tmp/out" && grep -q "^$v/dog/p.jpg: " "$tmp/out"'
printf 'a photo of a {label}.\na {}.\n\n' >"$tmp/templates.txt"
that "--templates and --top-k 1: one label per image" \
  'run 0 zeroshot --model "$m" --labels cat,dog,bird --templates "$tmp/templates.txt" --top-k 1 "$v/cat" && [ "$(wc -l <"$tmp/out")" -eq 6 ] && ! grep -q "," "$tmp/out"'

printf 'a photo of a {label}.\n\na photo.\n' >"$tmp/notmpl.txt"
that "a --templates line without {label} or {} is refused with file:line (exit 2)" \
  'run 2 zeroshot --model "$m" --labels cat,dog --templates "$tmp/notmpl.txt" "$v/cat" && [ ! -s "$tmp/out" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "notmpl.txt:3: template .a photo.. has no {label} (or {})" "$tmp/err"'
that "with --data too, which fills only {label} (as the zero_shot metric)" \
  'run 2 zeroshot --model "$m" --data "$tmp/r.yaml" --templates "$tmp/templates.txt" && grep -q "templates.txt:2: template .a {}.. has no {label}:" "$tmp/err"'
that "a recipe's data.templates without {label} is refused by zeroshot --data" \
  '(cd "$tmp" && run 2 zeroshot --model "$m" --data r.yaml --set "data.templates=[a photo.]") && grep -q "template .a photo.. has no {label}" "$tmp/err"'

# ---- retrieve
that "retrieve prints the top-k images" \
  'run 0 retrieve --model "$m" --index "$tmp/img.safetensors" --query "a photo of a dog." --top-k 5 && [ "$(wc -l <"$tmp/out")" -eq 5 ]'
that "as 'similarity path', most similar first" \
  'sort -c -s -r -n -k1,1 "$tmp/out" && awk "\$1 !~ /^-?[01]\.[0-9][0-9][0-9][0-9]\$/ { exit 1 }" "$tmp/out" && cut -d" " -f2 "$tmp/out" | while read -r f; do [ -f "$f" ] || exit 1; done'

# st_write FILE HEADER: a safetensors file of HEADER (padded) and no data
st_write() {
  h=$2
  while [ $(((${#h} + 8) % 8)) -ne 0 ]; do h="$h "; done
  printf "$(printf '\\%03o\\%03o\\%03o' $((${#h} & 255)) $((${#h} >> 8 & 255)) 0)\0\0\0\0\0%s" "$h" >"$1"
}
st_write "$tmp/empty.safetensors" '{"__metadata__":{"ids":"[]","kind":"image"},"features":{"dtype":"F32","shape":[0,64],"data_offsets":[0,0]}}'
that "an index of no images is refused in one line (exit 1), not an empty answer" \
  'run 1 retrieve --model "$m" --index "$tmp/empty.safetensors" --query dog && [ ! -s "$tmp/out" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "empty.safetensors: the index holds no images" "$tmp/err"'
cp "$tmp/img.safetensors" "$tmp/nan.safetensors"
printf '\000\000\300\177' | dd of="$tmp/nan.safetensors" bs=1 seek=$(($(st_data "$tmp/nan.safetensors") + 64 * 4 * 2 + 12)) conv=notrunc 2>/dev/null
that "an index with a NaN feature is refused, naming the row and its image" \
  'run 1 retrieve --model "$m" --index "$tmp/nan.safetensors" --query dog && [ ! -s "$tmp/out" ] && grep -q "nan.safetensors: the features of row 2 ($v/cat/2.png) are not finite (nan)" "$tmp/err"'
mkdir "$tmp/ctl" && cp "$v/cat/0.png" "$tmp/ctl/$(printf 'red\033[31m\nx').png"
that "retrieve prints an image path's control characters escaped, one line per image" \
  'run 0 embed --model "$m" --images "$tmp/ctl" --out "$tmp/ctl.safetensors" && run 0 retrieve --model "$m" --index "$tmp/ctl.safetensors" --query dog && [ "$(wc -l <"$tmp/out")" -eq 1 ] && ! grep -q "$(printf "\033")" "$tmp/out" && grep -qF "$tmp/ctl/red\x1b[31m\x0ax.png" "$tmp/out"'

# ---- errors
that "a missing model is an error naming it" \
  'run 1 embed --model "$tmp/nope.safetensors" --images "$v" --out "$tmp/x.npy" && grep -q "nope.safetensors" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]'
that "a corrupt image is an error naming it" \
  'run 1 embed --model "$m" --images "$src/corrupt.png" --out "$tmp/x.npy" && grep -q "corrupt.png" "$tmp/err" && [ ! -e "$tmp/x.npy" ]'
that "zeroshot too" 'run 1 zeroshot --model "$m" --labels a,b "$src/corrupt.png" && grep -q "corrupt.png" "$tmp/err"'
that "an index of texts is refused by retrieve, naming it" \
  'run 1 retrieve --model "$m" --index "$tmp/txt.safetensors" --query dog && grep -q "txt.safetensors.*text" "$tmp/err"'
that "an index of another dimension is refused" \
  'run 0 fit "$tmp/r.yaml" --set model.embed_dim=32 --set fit.epochs=1 --out "$tmp/run32" && run 0 embed --model "$tmp/run32/model.safetensors" --images "$v/cat" --out "$tmp/i32.safetensors" && run 1 retrieve --model "$m" --index "$tmp/i32.safetensors" --query dog && grep -q "i32.safetensors.*embed_dim is 64" "$tmp/err"'
that "a checkpoint without a learned vocabulary asks for --vocab" \
  'run 0 init --preset tiny --out "$tmp/init.safetensors" && run 1 embed --model "$tmp/init.safetensors" --texts "$tmp/texts.txt" --out "$tmp/x.npy" && grep -q "init.safetensors.*pass --vocab" "$tmp/err"'
that "bad usage exits 2" \
  'run 2 embed --model "$m" --out "$tmp/x.npy" && run 2 embed --model "$m" --images "$v" --texts "$tmp/texts.txt" --out "$tmp/x.npy" && run 2 embed --model "$m" --images "$v" --out "$tmp/x.csv" && run 2 zeroshot --model "$m" "$v" && run 2 retrieve --model "$m" --query x && run 2 embed --model "$m" --texts "$tmp/texts.txt" --context-length 13 --out "$tmp/x.npy"'

# ---- a bare PyTorch state dict: the config comes from the shapes
py=
for cand in python3 /usr/bin/python3; do
  if "$cand" -c 'import torch' >/dev/null 2>&1; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  for k in 1 2 3 4; do skip "python3 with torch is not installed"; done
  exit $fail
fi
cat >"$tmp/bare.py" <<'PY'
# bare.py SRCDIR write OUT | texts IDS NPY | images PATHS NPY
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1] + "/bench")
import torch_clip as tc
torch.manual_seed(3)
R = 16
cfg = dict(embed_dim=32, image_resolution=R, vision_layers=2, vision_width=128, vision_heads=2,
           vision_patch_size=8, context_length=12, vocab_size=600, transformer_width=64,
           transformer_heads=1, transformer_layers=1)
model = tc.build_model(cfg).float()


def clip_eval(path):
    """CLIP's eval transform with PIL: bicubic resize of the short side,
    center crop, normalise."""
    from PIL import Image
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = (R, int(R * h / w)) if w <= h else (int(R * w / h), R)
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - R) / 2.0)), int(round((nh - R) / 2.0))
    im = im.crop((left, top, left + R, top + R))
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    return ((np.asarray(im, dtype=np.float64) / 255 - mean) / std).transpose(2, 0, 1)


if sys.argv[2] == "write":
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    tc.write_safetensors(sys.argv[3], sd)  # no metadata
    sys.exit(0)
with torch.no_grad():
    if sys.argv[2] == "texts":
        f = model.encode_text(torch.tensor(np.loadtxt(sys.argv[3], dtype=np.int64, ndmin=2)))
    else:
        paths = open(sys.argv[3]).read().split("\n")[:-1]
        x = np.stack([clip_eval(p) for p in paths])
        f = model.encode_image(torch.tensor(x, dtype=torch.float32))
f = (f / f.norm(dim=1, keepdim=True)).numpy()
got = np.load(sys.argv[4])
assert got.shape == f.shape, (got.shape, f.shape)
err = np.abs(got - f).max()
assert err < 1e-5, err
PY
that "PyTorch's state_dict without metadata (bench/torch_clip.py) is written" \
  '"$py" "$tmp/bare.py" "$srcdir" write "$tmp/bare.safetensors" 2>"$tmp/err" && ! header "$tmp/bare.safetensors" | grep -q "__metadata__"'
that "embed loads it, the config from its shapes" \
  'run 0 embed --model "$tmp/bare.safetensors" --vocab "$tmp/run/vocab.txt" --texts "$tmp/texts.txt" --out "$tmp/bare.npy" && head -c 128 "$tmp/bare.npy" | grep -q "(3, 32)"'
that "and its text features are PyTorch's" \
  'run 0 tokenize --vocab "$tmp/run/vocab.txt" --context-length 12 <"$tmp/texts.txt" && cp "$tmp/out" "$tmp/ids.txt" && "$py" "$tmp/bare.py" "$srcdir" texts "$tmp/ids.txt" "$tmp/bare.npy" 2>"$tmp/err"'
if "$py" -c 'import PIL' >/dev/null 2>&1; then
  that "its image features are PyTorch's after PIL's eval transform" \
    'run 0 embed --model "$tmp/bare.safetensors" --images "$v/dog" "$src/photo.jpg" --out "$tmp/bare-img.npy" && "$py" "$tmp/bare.py" "$srcdir" images "$tmp/bare-img.npy.ids.txt" "$tmp/bare-img.npy" 2>"$tmp/err"'
else
  skip "python3 has no PIL"
fi
exit $fail
