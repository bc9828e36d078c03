#!/usr/bin/python3
"""Check cliptrain's patch dropout against an open_clip-style PyTorch ViT.

  tests/torch/check_patch_dropout.py CASE PASS [--other-patches]

CASE is a CLIP case (tests/torch/gen_clip_case.py, the golden format) with a
ViT image tower; PASS is what tests/unit/pdrop-pass wrote for it: the
patches cliptrain kept (input.kept, [B, K] grid indices), its features,
logits, loss and every gradient.  PyTorch (float64, bench/torch_clip.py's
model with the case's parameters) runs the image tower as open_clip's
PatchDropout does: conv1 over the whole image, the class token and the
positional embedding added, then each image's kept patch tokens gathered
after the class token, then ln_pre and the blocks.  The kept indices are
fed in a shuffled order: the tower's output must not depend on it.

Everything is compared with the golden README's float32 tolerances
(features 1e-5, logits 1e-4, loss 1e-5 * max(1, |ref|), each gradient
1e-4 * max|ref| + 1e-7).  Exit 0 when all agree, 1 otherwise.
--other-patches feeds PyTorch another choice of patches (each index moved
by one, modulo GG): a check that must then fail, so that this one can.
"""

import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import torch_clip as tc  # noqa: E402


def encode_image_kept(v, image, kept):
    """The ViT image tower v on IMAGE, keeping the patch tokens KEPT
    ([B, K] long) after the positional embedding (open_clip's order)."""
    x = v.conv1(image)                          # [B, W, g, g]
    x = x.reshape(x.shape[0], x.shape[1], -1)   # [B, W, g*g]
    x = x.permute(0, 2, 1)                      # [B, g*g, W]
    cls = v.class_embedding.to(x.dtype) + torch.zeros(
        x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = torch.cat([cls, x], dim=1)              # [B, 1+g*g, W]
    x = x + v.positional_embedding.to(x.dtype)
    rows = torch.arange(x.shape[0])[:, None]
    x = torch.cat([x[:, :1], x[:, 1:][rows, kept]], dim=1)  # [B, 1+K, W]
    x = v.ln_pre(x)
    x = x.permute(1, 0, 2)
    x = v.transformer(x)
    x = x.permute(1, 0, 2)
    x = v.ln_post(x[:, 0, :])
    return x @ v.proj


def main(argv):
    if len(argv) not in (3, 4) or (len(argv) == 4 and argv[3] != "--other-patches"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    t = tc.read_safetensors(argv[1])
    ours = tc.read_safetensors(argv[2])
    cfg = tc.config_from_case(t)
    if cfg["vision_patch_size"] == 0:
        print("%s: a ResNet image tower has no patches" % argv[1], file=sys.stderr)
        return 2
    model = tc.build_model(cfg).double()
    tc.load_case_params(model, t)
    images = torch.from_numpy(t["input.images"]).double()
    tokens = torch.from_numpy(t["input.tokens"])
    kept = ours["input.kept"].astype(np.int64)
    gg = (cfg["image_resolution"] // cfg["vision_patch_size"]) ** 2
    if len(argv) == 4:
        kept = (kept + 1) % gg
    rng = np.random.default_rng(0)
    shuffled = np.stack([rng.permutation(row) for row in kept])

    model.zero_grad(set_to_none=True)
    img = encode_image_kept(model.visual, images, torch.from_numpy(shuffled))
    txt = model.encode_text(tokens)
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    logits = model.logit_scale.exp() * img @ txt.t()
    loss = tc.clip_loss(logits)
    loss.backward()
    ref = {"output.image_features": img, "output.text_features": txt,
           "output.logits_per_image": logits, "output.loss": loss.reshape(1)}
    for n, p in model.named_parameters():
        ref["grad." + n] = p.grad
    ok = True
    worst = (0.0, "")
    for k, r in ref.items():
        r = r.detach().double().numpy()
        o = ours[k].astype(np.float64).reshape(r.shape)
        err = float(np.max(np.abs(o - r)))
        if k in ("output.image_features", "output.text_features"):
            tol = 1e-5
        elif k == "output.logits_per_image":
            tol = 1e-4
        elif k == "output.loss":
            tol = 1e-5 * max(1.0, abs(float(r[0])))
        else:
            tol = 1e-4 * float(np.max(np.abs(r))) + 1e-7
        if err / tol > worst[0]:
            worst = (err / tol, k)
        if err > tol:
            ok = False
            print("  FAIL %s: max err %.3e > tol %.3e" % (k, err, tol))
    b, k = kept.shape
    print("batch %d, %d of %d patches kept; worst error / tolerance %.3g (%s)"
          % (b, k, gg, worst[0], worst[1]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
