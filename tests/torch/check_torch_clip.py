#!/usr/bin/python3
"""Check bench/torch_clip.py and tests/torch/gen_clip_case.py against golden data.

For every case file given (default: /work/shared/golden/clip_case_small.
safetensors and tests/data/clip_case_*.safetensors) this

  1. reads the config from the file, builds the model, loads param.* and
     input.*, runs forward/backward in float64 and compares with output.*
     and grad.*: each tensor must agree within 1e-5 relative
     (max|ours - ref| <= 1e-5 * max|ref| + 1e-7);
  2. does the same in float32 against the README's float32 tolerances
     (features 1e-5, logits 1e-4, loss 1e-5*max(1,|ref|),
     grads 1e-4*max|ref G| + 1e-7), to show the case suits a float32
     implementation;
  3. regenerates a case with the file's config through gen_clip_case and
     checks that it has the same tensor names, order, dtypes and shapes.

Exit status 0 when everything passes.  Usage:
  tests/torch/check_torch_clip.py [CASE.safetensors ...]
"""

import glob
import os
import sys
import tempfile

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
sys.path.insert(0, HERE)
import torch_clip as tc  # noqa: E402
import gen_clip_case as gcc  # noqa: E402

GOLDEN = "/work/shared/golden/clip_case_small.safetensors"


def run(t, dtype):
    cfg = tc.config_from_case(t)
    model = tc.build_model(cfg).to(dtype)
    tc.load_case_params(model, t)
    images = torch.from_numpy(t["input.images"]).to(dtype)
    tokens = torch.from_numpy(t["input.tokens"])
    outs, grads = gcc.compute_case(model, images, tokens)
    res = {}
    for k, v in outs.items():
        res["output." + k] = v.double().numpy()
    for n, g in grads.items():
        res["grad." + n] = g.double().numpy().reshape(
            t["grad." + n].shape)
    return cfg, res


def compare64(t, res):
    """Worst relative error (err / max|ref|) over all outputs and grads."""
    worst = {"output": (0.0, ""), "grad": (0.0, "")}
    ok = True
    for k, ours in res.items():
        ref = t[k].astype(np.float64)
        err = float(np.max(np.abs(ours - ref)))
        scale = float(np.max(np.abs(ref)))
        rel = err / scale if scale > 0 else err
        if err > 1e-5 * scale + 1e-7:
            ok = False
            print("  FAIL f64 %s: max err %.3e, max|ref| %.3e" %
                  (k, err, scale))
        kind = k.split(".")[0]
        if rel > worst[kind][0]:
            worst[kind] = (rel, k)
    return ok, worst


def compare32(t, res):
    ok = True
    worst = {}
    for k, ours in res.items():
        ref = t[k].astype(np.float64)
        err = float(np.max(np.abs(ours - ref)))
        if k in ("output.image_features", "output.text_features"):
            tol = 1e-5
        elif k == "output.logits_per_image":
            tol = 1e-4
        elif k == "output.loss":
            tol = 1e-5 * max(1.0, abs(float(ref[0])))
        else:
            tol = 1e-4 * float(np.max(np.abs(ref))) + 1e-7
        frac = err / tol
        kind = k.split(".")[0]
        if frac > worst.get(kind, (0.0, ""))[0]:
            worst[kind] = (frac, k)
        if err > tol:
            ok = False
            print("  FAIL f32 %s: max err %.3e > tol %.3e" % (k, err, tol))
    return ok, worst


def check_format(path, t, cfg):
    batch = t["input.images"].shape[0]
    regen = gcc.generate(cfg, batch, seed=12345)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "case.safetensors")
        tc.write_safetensors(p, regen)
        back = tc.read_safetensors(p)
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
    ok = True
    if list(back.keys()) != list(t.keys()):
        ok = False
        print("  FAIL format: tensor names/order differ")
        print("    only in file: %s" % sorted(set(t) - set(back)))
        print("    only in regen: %s" % sorted(set(back) - set(t)))
    for k in t:
        if k in back and (back[k].dtype != t[k].dtype or
                          back[k].shape != t[k].shape):
            ok = False
            print("  FAIL format %s: %s%s vs %s%s" % (
                k, back[k].dtype, back[k].shape, t[k].dtype, t[k].shape))
    if (8 + n) % 8:
        ok = False
        print("  FAIL format: 8 + header length is not a multiple of 8")
    tok = regen["input.tokens"]
    V, L = cfg["vocab_size"], cfg["context_length"]
    ends = [int(np.argmax(r)) for r in tok]
    if not (all(r[0] == V - 2 for r in tok) and
            all(r[e] == V - 1 for r, e in zip(tok, ends)) and
            L - 1 in ends):
        ok = False
        print("  FAIL format: regenerated tokens malformed")
    return ok


def main(argv):
    paths = argv or ([GOLDEN] + sorted(glob.glob(
        os.path.normpath(os.path.join(HERE, "..", "data", "clip_case_*.safetensors")))))
    all_ok = True
    for path in paths:
        t = tc.read_safetensors(path)
        try:
            cfg = tc.config_from_case(t)
        except ValueError as e:
            print("%s: skipped (%s)" % (path, e))
            continue
        print("%s: %s batch %d" % (path, cfg, t["input.images"].shape[0]))
        _, r64 = run(t, torch.float64)
        ok64, w64 = compare64(t, r64)
        print("  float64: worst relative error outputs %.3e (%s), grads "
              "%.3e (%s)" % (w64["output"][0], w64["output"][1],
                             w64["grad"][0], w64["grad"][1]))
        _, r32 = run(t, torch.float32)
        ok32, w32 = compare32(t, r32)
        print("  float32: worst err/tolerance outputs %.3f (%s), grads "
              "%.3f (%s)" % (w32["output"][0], w32["output"][1],
                             w32["grad"][0], w32["grad"][1]))
        okf = check_format(path, t, cfg)
        print("  format of a regenerated case: %s" % ("ok" if okf else "BAD"))
        all_ok = all_ok and ok64 and ok32 and okf
    print("PASS" if all_ok else "FAIL")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
