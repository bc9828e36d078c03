#!/usr/bin/python3
"""Write the image test cases for tests/unit/test-image.c into tests/data/images/.

Run with the system Python (Pillow 9.4, numpy, and torchvision when it is
installed):  /usr/bin/python3 tests/torch/gen_image_cases.py [OUTDIR]

Writes small PNG and JPEG files, then ref.safetensors holding what PIL and
torchvision make of them:

  decode/NAME             U8 (h, w, 3)  Image.open(NAME).convert("RGB")
  rcc/NAME/SIZE/u8        U8 (SIZE, SIZE, 3)  CLIP's preprocess before
                          ToTensor: Resize(SIZE, BICUBIC), CenterCrop(SIZE),
                          convert("RGB")
  rcc/NAME/SIZE/f32       F32 (3, SIZE, SIZE) the whole preprocess, with
                          ToTensor and Normalize(CLIP's mean, std), for
                          SIZE <= 32.  For SIZE 224, to keep the files
                          small, only rows ROW0 .. ROW0 + 7 (f32rows; ROW0
                          in the metadata) and the u8 result's SHA-256
                          (metadata rcc/NAME/224/sha256)
  crop/K/box              I64 [top, left, height, width, out]
  crop/K/u8, crop/K/f32   (f32 not for the grey case) torchvision's F.resized_crop(img, top, left,
                          height, width, [out, out], BICUBIC), before and
                          after ToTensor + Normalize

The preprocess runs on the image as PIL opens it ("L" or "RGB"), exactly as
CLIP's does.  Deliberate deviations recorded here rather than hidden:
16-bit grey PNGs are opened by PIL as mode "I" and convert("RGB") clamps
every value above 255 to 255; cliptrain keeps the high byte (libpng's
strip_16, which is also what PIL does for 16-bit RGB), so decode/grey16.png
is the high byte, not PIL's clamp.
"""
import hashlib
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image

try:
    import torch
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode
    HAVE_TV = True
except ImportError:  # PIL + numpy stand in for ToTensor and Normalize
    HAVE_TV = False

warnings.filterwarnings("ignore", "Palette images with Transparency")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "data", "images")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20240611)


# ---------------------------------------------------------------- pictures

def picture(h, w, seed, noise=12.0):
    """A smooth colour picture with a few hard edges and some noise."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = r.uniform(0.5, 3.0), r.uniform(0.5, 3.0), r.uniform(0, 6.3)
        img[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * x / w + fy * y / h) + ph)
    # a disc and a bar with sharp borders
    cy, cx, rad = r.uniform(0.3, 0.7) * h, r.uniform(0.3, 0.7) * w, 0.25 * min(h, w)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < rad ** 2
    img[disc] = r.uniform(0, 255, 3)
    img[:, int(0.8 * w):int(0.85 * w) + 1] = (250, 10, 40)
    img[0, :] = 255  # full white and black rows test the clamping
    img[-1, :] = 0
    img += r.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def fashion(seed):
    """A 28x28 grey 'garment' like Fashion-MNIST's: dark background, bright
    blob with texture."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28].astype(np.float64)
    blob = ((x - 13.5) / 9.0) ** 2 + ((y - 14) / 12.0) ** 4 < 1.0
    img = np.where(blob, 170 + 60 * np.sin(x * 1.3) + r.normal(0, 20, (28, 28)), 0)
    img[blob & (np.abs(x - 13.5) < 1)] = 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- a PNG writer
# PIL cannot write 16-bit RGB, 2/4-bit grey or interlaced PNGs.

def _chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)


def _pack_rows(a, bit_depth):
    """Rows of samples (h, w*channels) to scanline bytes."""
    if bit_depth == 16:
        return [row.astype(">u2").tobytes() for row in a]
    if bit_depth == 8:
        return [row.astype(np.uint8).tobytes() for row in a]
    per = 8 // bit_depth
    out = []
    for row in a:
        pad = (-len(row)) % per
        row = np.concatenate([row, np.zeros(pad, np.uint8)]).reshape(-1, per)
        b = np.zeros(len(row), np.uint32)
        for i in range(per):
            b |= row[:, i].astype(np.uint32) << (8 - bit_depth * (i + 1))
        out.append(b.astype(np.uint8).tobytes())
    return out


def _filter_rows(rows, bpp, kinds):
    """Apply PNG filters (cycling through KINDS) to each scanline."""
    out, prev = [], bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        kind = kinds[i % len(kinds)]
        cur = np.frombuffer(row, np.uint8).astype(np.int32)
        up = np.frombuffer(prev, np.uint8).astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if kind == 0:
            f = cur
        elif kind == 1:
            f = cur - left
        elif kind == 2:
            f = cur - up
        elif kind == 3:
            f = cur - (left + up) // 2
        else:
            p = left + up - ul
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
            f = cur - pred
        out.append(bytes([kind]) + (f & 0xff).astype(np.uint8).tobytes())
        prev = row
    return b"".join(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
         (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]  # x0, y0, dx, dy


def write_png(path, samples, color_type, bit_depth, interlace=False, plte=None, trns=None,
              filters=(0, 1, 2, 3, 4)):
    """SAMPLES: (h, w, channels) integers."""
    h, w, ch = samples.shape
    bpp = max(1, ch * bit_depth // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            rows = _pack_rows(sub.reshape(sub.shape[0], -1), bit_depth)
            raw += _filter_rows(rows, bpp, filters)
    else:
        raw = _filter_rows(_pack_rows(samples.reshape(h, -1), bit_depth), bpp, filters)
    png = b"\x89PNG\r\n\x1a\n"
    png += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                       1 if interlace else 0))
    if plte is not None:
        png += _chunk(b"PLTE", plte.astype(np.uint8).tobytes())
    if trns is not None:
        png += _chunk(b"tRNS", trns)
    png += _chunk(b"gAMA", struct.pack(">I", 45455))  # PIL and we both ignore it
    png += _chunk(b"IDAT", zlib.compress(raw, 9))
    png += _chunk(b"IEND", b"")
    with open(os.path.join(OUT, path), "wb") as f:
        f.write(png)


# ---------------------------------------------------------------- the files

decode = {}   # name -> (h, w, 3) expected pixels


def pil_rgb(name):
    return np.asarray(Image.open(os.path.join(OUT, name)).convert("RGB"))


def add_pil(name):
    decode[name] = pil_rgb(name)


pic = picture(23, 17, 1)
Image.fromarray(pic).save(os.path.join(OUT, "rgb.png"))
add_pil("rgb.png")

rgba = np.dstack([picture(19, 21, 2), rng.integers(0, 256, (19, 21), dtype=np.uint8)])
Image.fromarray(rgba, "RGBA").save(os.path.join(OUT, "rgba.png"))
add_pil("rgba.png")

grey = picture(15, 22, 3)[..., 0]
Image.fromarray(grey, "L").save(os.path.join(OUT, "grey.png"))
add_pil("grey.png")

grey_alpha = np.dstack([grey, 255 - grey])
Image.fromarray(grey_alpha, "LA").save(os.path.join(OUT, "grey-alpha.png"))
add_pil("grey-alpha.png")

pal = Image.fromarray(picture(18, 20, 4)).quantize(colors=37)
pal.info["transparency"] = 5
pal.save(os.path.join(OUT, "palette.png"), transparency=5)
add_pil("palette.png")

# 4-bit palette, interlaced (hand-written)
plte = rng.integers(0, 256, (16, 3))
idx = rng.integers(0, 16, (13, 11, 1))
write_png("palette4-interlaced.png", idx, 3, 4, interlace=True, plte=plte,
          trns=bytes([0, 128, 255]))
add_pil("palette4-interlaced.png")

rgb16 = picture(12, 14, 5).astype(np.uint16) * 256 + rng.integers(0, 256, (12, 14, 3))
write_png("rgb16.png", rgb16, 2, 16)
add_pil("rgb16.png")
assert (decode["rgb16.png"] == (rgb16 >> 8)).all()

rgba16 = np.dstack([rgb16, rng.integers(0, 65536, (12, 14))])
write_png("rgba16.png", rgba16, 6, 16)
add_pil("rgba16.png")

grey16 = (grey.astype(np.uint16) * 256 + rng.integers(0, 256, grey.shape)).reshape(15, 22, 1)
write_png("grey16.png", grey16, 0, 16)
# PIL: mode "I", convert("RGB") clamps to 255.  We keep the high byte.
decode["grey16.png"] = np.repeat((grey16 >> 8).astype(np.uint8), 3, axis=2)
pil_grey16 = pil_rgb("grey16.png")
assert not (pil_grey16 == decode["grey16.png"]).all()

for bits, scale in ((1, 255), (2, 85), (4, 17)):
    g = rng.integers(0, 1 << bits, (9, 13, 1))
    name = "grey%d.png" % bits
    write_png(name, g, 0, bits)
    add_pil(name)
    assert (decode[name][..., 0] == g[..., 0] * scale).all()

write_png("grey-trns.png", grey.reshape(15, 22, 1), 0, 8, trns=struct.pack(">H", 7))
add_pil("grey-trns.png")

write_png("rgb-interlaced.png", picture(37, 29, 6), 2, 8, interlace=True)
add_pil("rgb-interlaced.png")

write_png("grey2-interlaced.png", rng.integers(0, 4, (10, 7, 1)), 0, 2, interlace=True)
add_pil("grey2-interlaced.png")

# JPEGs: libjpeg-turbo decodes them for PIL and for us
jpg = picture(31, 45, 7, noise=4)
Image.fromarray(jpg).save(os.path.join(OUT, "baseline.jpg"), quality=90)
add_pil("baseline.jpg")
Image.fromarray(jpg).save(os.path.join(OUT, "baseline444.jpg"), quality=90, subsampling=0)
add_pil("baseline444.jpg")
Image.fromarray(jpg).save(os.path.join(OUT, "progressive.jpg"), quality=85, progressive=True)
add_pil("progressive.jpg")
Image.fromarray(jpg[..., 1]).save(os.path.join(OUT, "grey.jpg"), quality=90)
add_pil("grey.jpg")
Image.fromarray(jpg).convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=90)
add_pil("cmyk.jpg")
assert Image.open(os.path.join(OUT, "cmyk.jpg")).mode == "CMYK"

# Transform sources
Image.fromarray(fashion(8), "L").save(os.path.join(OUT, "fmnist.png"))
Image.fromarray(picture(61, 98, 9, noise=5)).save(os.path.join(OUT, "wide.png"))
Image.fromarray(picture(95, 61, 10, noise=5)).save(os.path.join(OUT, "tall.png"))
Image.fromarray(picture(96, 128, 11, noise=1)).save(os.path.join(OUT, "big.png"))
Image.fromarray(picture(375, 500, 12, noise=2)).save(os.path.join(OUT, "photo.jpg"), quality=75)
add_pil("fmnist.png")

# ---------------------------------------------------------------- transforms

def to_tensor_normalize(img):
    if HAVE_TV:
        t = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(img)
        return t.numpy().astype(np.float32)
    a = np.asarray(img.convert("RGB")).astype(np.float32) / np.float32(255)
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return a.transpose(2, 0, 1).copy()


def clip_preprocess(img, size):
    """CLIP's _transform(n_px), split before ToTensor."""
    if HAVE_TV:
        pre = T.Compose([T.Resize(size, interpolation=InterpolationMode.BICUBIC),
                         T.CenterCrop(size), lambda im: im.convert("RGB")])
        out = pre(img)
    else:
        w, h = img.size
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        out = img.crop((left, top, left + size, top + size)).convert("RGB")
    return out, to_tensor_normalize(out)


def resized_crop(img, top, left, height, width, size):
    if HAVE_TV:
        out = TF.resized_crop(img, top, left, height, width, [size, size],
                              InterpolationMode.BICUBIC).convert("RGB")
    else:
        out = img.crop((left, top, left + width, top + height))
        out = out.resize((size, size), Image.BICUBIC).convert("RGB")
    return out, to_tensor_normalize(out)


tensors = {}  # name -> numpy array
meta = {"generator": "tests/torch/gen_image_cases.py",
        "pillow": Image.__version__ if hasattr(Image, "__version__") else "",
        "torchvision": __import__("torchvision").__version__ if HAVE_TV else "none"}
for name, a in decode.items():
    tensors["decode/" + name] = a

max_norm_dev = 0.0
STRIP = 8  # rows of the 224 outputs kept as float32
for name, size, strip in (("fmnist.png", 224, 100), ("wide.png", 32, None),
                          ("tall.png", 32, None), ("big.png", 24, None),
                          ("wide.png", 61, None), ("photo.jpg", 224, 150)):
    img = Image.open(os.path.join(OUT, name))
    u8img, f32 = clip_preprocess(img, size)
    u8 = np.asarray(u8img)
    key = "rcc/%s/%d" % (name, size)
    # our ToTensor + Normalize, to check that torchvision's is the same
    mine = ((u8.astype(np.float32) / np.float32(255) - np.array(MEAN, np.float32))
            / np.array(STD, np.float32)).transpose(2, 0, 1)
    max_norm_dev = max(max_norm_dev, float(np.abs(mine - f32).max()))
    if strip is None:
        tensors[key + "/u8"] = u8
        if size <= 32:
            tensors[key + "/f32"] = f32
    else:
        meta[key + "/row0"] = str(strip)
        tensors[key + "/f32rows"] = np.ascontiguousarray(f32[:, strip:strip + STRIP])
        meta[key + "/sha256"] = hashlib.sha256(u8.tobytes()).hexdigest()

crops = [("wide.png", 7, 13, 30, 55, 40),   # up in y, down in x
         ("wide.png", 0, 30, 61, 61, 20),   # down both, full height
         ("wide.png", 3, 2, 5, 9, 33),      # strong upscale
         ("fmnist.png", 3, 5, 17, 11, 48),  # grey
         ("big.png", 10, 20, 80, 101, 23),  # strong antialias
         ("tall.png", 20, 0, 30, 61, 30)]   # width only changes
for k, (name, top, left, h, w, size) in enumerate(crops):
    img = Image.open(os.path.join(OUT, name))
    u8img, f32 = resized_crop(img, top, left, h, w, size)
    tensors["crop/%d/box" % k] = np.array([top, left, h, w, size], np.int64)
    tensors["crop/%d/u8" % k] = np.asarray(u8img)
    if name != "fmnist.png":
        tensors["crop/%d/f32" % k] = f32
    meta["crop/%d/file" % k] = name
print("max |torchvision - (u8/255 - mean)/std| = %.3g" % max_norm_dev)
assert max_norm_dev <= 1e-6


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, meta):
    dtypes = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32",
              np.dtype(np.int64): "I64"}
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


write_safetensors(os.path.join(OUT, "ref.safetensors"), tensors, meta)
total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
print("wrote %d files, %d bytes, into %s" % (len(os.listdir(OUT)), total, OUT))
