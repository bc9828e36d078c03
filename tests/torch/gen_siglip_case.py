#!/usr/bin/env python3
"""Golden cases of SigLIP's sigmoid loss for tests/unit/siglip_parity.

The reference is written here from the paper's definition (Zhai et al.
2023, "Sigmoid Loss for Language Image Pre-Training"), in PyTorch float64
with autograd for the gradients:

    z = exp(t) * img @ txt.T + b           (B, G)
    y = +1 where text j is image i's caption (j = offset + i), else -1
    loss = -sum(logsigmoid(y * z)) / G

G = B is one process; G > B with an offset is one rank's images against
every rank's gathered captions (its terms, weighted by the global batch).

Each case k is stored as case<k>.img (B, E), case<k>.txt (G, E),
case<k>.params [t, b, offset] and the outputs case<k>.loss [1],
case<k>.d_img, case<k>.d_txt, case<k>.d_t [1], case<k>.d_b [1]; the
metadata "cases" says how many.

Usage: gen_siglip_case.py --out FILE [--seed N]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "bench"))
import torch_clip as tc  # noqa: E402

# (B, G, offset, E, t, b): batches of 1, 3, 7 and 16 at the paper's
# initialisation and at values where every term matters, a rank's rows
CASES = [
    (1, 1, 0, 16, np.log(10.0), -10.0),
    (3, 3, 0, 16, 1.3, -2.0),
    (7, 7, 0, 16, np.log(10.0), -10.0),
    (7, 7, 0, 24, 2.0, 1.5),
    (16, 16, 0, 32, 1.3, -2.0),
    (3, 9, 4, 16, 1.7, -1.0),
]


def unit_rows(rng, n, e):
    x = rng.standard_normal((n, e)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference(img, txt, t, b, offset):
    img = torch.tensor(img, dtype=torch.float64, requires_grad=True)
    txt = torch.tensor(txt, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    B, G = img.shape[0], txt.shape[0]
    z = torch.exp(t) * img @ txt.T + b
    y = -torch.ones(B, G, dtype=torch.float64)
    y[torch.arange(B), offset + torch.arange(B)] = 1.0
    loss = -torch.nn.functional.logsigmoid(y * z).sum() / G
    loss.backward()
    return loss.item(), img.grad.numpy(), txt.grad.numpy(), t.grad.item(), b.grad.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=24)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    out = {}
    for k, (B, G, offset, E, t, b) in enumerate(CASES):
        img = unit_rows(rng, B, E)
        txt = unit_rows(rng, G, E)
        t32, b32 = np.float32(t), np.float32(b)
        loss, di, dt_, gt, gb = reference(img, txt, float(t32), float(b32), offset)
        f = np.float32
        out["case%d.img" % k] = img
        out["case%d.txt" % k] = txt
        out["case%d.params" % k] = np.array([t32, b32, offset], dtype=f)
        out["case%d.loss" % k] = np.array([loss], dtype=f)
        out["case%d.d_img" % k] = di.astype(f)
        out["case%d.d_txt" % k] = dt_.astype(f)
        out["case%d.d_t" % k] = np.array([gt], dtype=f)
        out["case%d.d_b" % k] = np.array([gb], dtype=f)
    tc.write_safetensors(a.out, out, metadata={"cases": str(len(CASES)),
                                               "torch": torch.__version__})


if __name__ == "__main__":
    main()
