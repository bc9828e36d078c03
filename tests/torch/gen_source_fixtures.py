#!/usr/bin/env python3
"""Writes the small images tests/unit/test-sources.c reads, into tests/data/sources/.

Run once (needs PIL): /usr/bin/python3 tests/torch/gen_source_fixtures.py
The C test recomputes the expected pixels from the same formulas:
  rgbK.png   (K = 0..3): 3x2 RGB, pixel (x, y) = (40K + 10x, 50y + 5, 200 - 30K)
  gray.png:            2x2 grey (L), rows [0, 85], [170, 255]
  photo.jpg:           8x6 JPEG of a flat colour (lossy: only the size is checked)
  corrupt.png:         the first 40 bytes of rgb0.png (a truncated PNG)
"""
import io
import os

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sources")


def rgb(k):
    im = Image.new("RGB", (3, 2))
    for y in range(2):
        for x in range(3):
            im.putpixel((x, y), (40 * k + 10 * x, 50 * y + 5, 200 - 30 * k))
    return im


def main():
    os.makedirs(OUT, exist_ok=True)
    for k in range(4):
        rgb(k).save(os.path.join(OUT, "rgb%d.png" % k), optimize=True)
    g = Image.new("L", (2, 2))
    g.putdata([0, 85, 170, 255])
    g.save(os.path.join(OUT, "gray.png"), optimize=True)
    Image.new("RGB", (8, 6), (120, 60, 30)).save(os.path.join(OUT, "photo.jpg"), quality=90)
    buf = io.BytesIO()
    rgb(0).save(buf, format="PNG", optimize=True)
    with open(os.path.join(OUT, "corrupt.png"), "wb") as f:
        f.write(buf.getvalue()[:40])


if __name__ == "__main__":
    main()
