#!/usr/bin/python3
"""Generate a "CLIP case" file (ViT or ResNet image tower) in the golden format.

The format is the one of /work/shared/golden/clip_case_small.safetensors
(see the golden README): config.* (I64 [1]), then param.<name> and
grad.<name> pairs in OpenAI state-dict order, input.images, input.tokens,
output.image_features, output.text_features, output.logits_per_image,
output.loss.  Everything is computed in float64 from the float32 values that
are stored, and stored as float32.

Parameters are moved away from their initial values so that no layer is a
trivial identity: every layer-norm gain is 1 + 0.1*N(0,1), every layer-norm
bias and every other bias gets + 0.05*N(0,1), and logit_scale is set to 2.3.

Tokens: each row is start (vocab_size-2), random ids in [1, vocab_size-3],
end (vocab_size-1), zero padding.  Row lengths vary and at least one row's
end token sits in the last position.  Images are N(0,1).

A ResNet case (--vision-layers 1,2,1,1 --vision-patch-size 0) also holds
buffer.<name> (BatchNorm running statistics before the pass: means
0.1*N(0,1), variances 1 + 0.2*|N(0,1)|) and output.buffer.<name> (after the
training-mode forward); its BatchNorm gains are perturbed like the layer-norm
gains (every bn3.weight included, which OpenAI initialises to 0), and
config.vision_layers holds the 4 stage counts.

Usage: tests/torch/gen_clip_case.py --out PATH --seed N [config options]
"""

import argparse
import copy
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "bench"))
import torch_clip as tc  # noqa: E402

DEFAULTS = dict(embed_dim=32, image_resolution=32, vision_layers=2,
                vision_width=64, vision_patch_size=8, vision_heads=2,
                context_length=16, vocab_size=1000, transformer_width=48,
                transformer_heads=4, transformer_layers=2)


F32_RUNS = 3


def make_tokens(rng, batch, context_length, vocab_size):
    """[batch, context_length] int64 token rows (see module docstring)."""
    if context_length < 2:
        raise ValueError("context_length must be >= 2")
    if vocab_size < 4:
        raise ValueError("vocab_size must be >= 4")
    lengths = rng.integers(2, context_length + 1, size=batch)
    full_row = int(rng.integers(0, batch))
    lengths[full_row] = context_length
    if batch > 1 and np.all(lengths == context_length) and context_length > 2:
        other = (full_row + 1) % batch
        lengths[other] = int(rng.integers(2, context_length))
    tokens = np.zeros((batch, context_length), dtype=np.int64)

    def fill(i, n):
        tokens[i, :] = 0
        tokens[i, 0] = vocab_size - 2
        tokens[i, 1:n - 1] = rng.integers(1, vocab_size - 2, size=n - 2)
        tokens[i, n - 1] = vocab_size - 1

    for i, n in enumerate(lengths):
        fill(i, int(n))
    # no two captions alike (duplicate rows would give duplicate columns)
    if context_length > 2:
        for i in range(batch):
            for _ in range(100):
                if not any(np.array_equal(tokens[i], tokens[j])
                           for j in range(i)):
                    break
                n = int(lengths[i]) if lengths[i] > 2 else \
                    int(rng.integers(3, context_length + 1))
                fill(i, n)
    return tokens


def perturb(model, gen):
    """Move parameters away from init (in place)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_ln = ".ln_" in ("." + name) or name.startswith("ln_")
            is_bn = ".bn" in name or ".downsample.1." in name
            if (is_ln or is_bn) and leaf == "weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen,
                                                dtype=torch.float64))
            elif leaf == "bias" or leaf == "in_proj_bias":
                p.add_(0.05 * torch.randn(p.shape, generator=gen,
                                          dtype=torch.float64))
        model.logit_scale.fill_(2.3)


def round_to_f32(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())


def compute_case(model, images, tokens):
    """Forward + backward in the model's dtype; returns (outputs, grads)."""
    model.zero_grad(set_to_none=True)
    img, txt, logits = tc.clip_forward_features(model, images, tokens)
    loss = tc.clip_loss(logits)
    loss.backward()
    outs = dict(image_features=img.detach(), text_features=txt.detach(),
                logits_per_image=logits.detach(),
                loss=loss.detach().reshape(1))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return outs, grads


class MaskedReLU(torch.nn.Module):
    """A ReLU whose pass/block pattern is given: x * mask (0 or 1)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask.to(x.dtype)


def relu_modules(model):
    """The image tower's ReLUs in execution order (OpenAI's module order:
    the stem's relu1-3, then each Bottleneck's relu1-3), as (parent,
    attribute, name)."""
    out = []
    for name, mod in model.visual.named_modules():
        for attr in ("relu1", "relu2", "relu3"):
            child = getattr(mod, attr, None)
            if isinstance(child, (torch.nn.ReLU, MaskedReLU)):
                out.append((mod, attr, ("visual.%s.%s" % (name, attr)).replace(
                    "visual..", "visual.")))
    return out


def relu_inputs(model, images, tokens):
    """Each image-tower ReLU's input (NCHW, the model's dtype) in one
    training-mode forward; the running statistics are left as they were."""
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    got = []
    hooks = [getattr(mod, attr).register_forward_pre_hook(
        lambda m, inp: got.append(inp[0].detach().clone()))
        for mod, attr, _ in relu_modules(model)]
    with torch.no_grad():
        model.encode_image(images)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(saved[n])
    return got


def read_masks(model, images, tokens, path):
    """The ResNet's ReLU patterns that cliptrain chose (PATH: clip_parity
    --dump-masks, uint8 0/1, each ReLU's (B, H, W, C) rows in
    relu_modules order), as float64 NCHW tensors.  Where float32 rounding
    puts a pre-activation on the other side of 0 than float64 does, a
    float64 reference with its own pattern differs from any float32 run
    by that unit's whole gradient; with the pattern forced (install_masks)
    the reference is PyTorch's exact computation of the same branch.
    Returns (masks, flips, worst): the number of units that differ from
    float64's own pattern, and the largest |pre-activation| among them
    relative to the largest of its ReLU."""
    raw = np.fromfile(path, dtype=np.uint8)
    pre = relu_inputs(model, images, tokens)
    off, flips, worst, masks = 0, 0, 0.0, []
    for x in pre:
        B, C, H, W = x.shape
        n = B * C * H * W
        if off + n > raw.size:
            raise ValueError("%s: too short for the model's ReLUs" % path)
        m = raw[off:off + n].reshape(B, H, W, C).transpose(0, 3, 1, 2)
        off += n
        mask = torch.from_numpy(np.ascontiguousarray(m).astype(np.float64))
        diff = mask != (x > 0).to(torch.float64)
        if diff.any():
            flips += int(diff.sum())
            worst = max(worst, float(x[diff].abs().max() / x.abs().max()))
        masks.append(mask)
    if off != raw.size:
        raise ValueError("%s: %d bytes, the model's ReLUs have %d" % (
            path, raw.size, off))
    return masks, flips, worst


def install_masks(model, masks):
    """Replace the image tower's ReLUs by MaskedReLUs of MASKS."""
    for (mod, attr, _), mask in zip(relu_modules(model), masks):
        setattr(mod, attr, MaskedReLU(mask))


def bf16_errors(model32, images, tokens):
    """PyTorch's CPU autocast (bf16) on the case, against the float64
    pass of the same (unforced) model: for each gradient, the squared L2
    distance (the caller divides by the reference's norm), and for each
    features tensor and running statistic after the pass the max |error|.
    Returns {"grad.<name>": squared distance, "output.<x>_features" and
    "output.buffer.<name>": max error}."""
    ref_model = copy.deepcopy(model32).double()
    ref_outs, ref = compute_case(ref_model, torch.from_numpy(images).double(),
                                 torch.from_numpy(tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs, got = compute_case(model32, torch.from_numpy(images),
                                 torch.from_numpy(tokens))
    out = {}
    for n, g in got.items():
        d = g.double() - ref[n]
        out["grad." + n] = float((d * d).sum())
    refbuf = dict(ref_model.named_buffers())
    for n, b in model32.named_buffers():
        if n.endswith(("running_mean", "running_var")):
            out["output.buffer." + n] = float((b.double() - refbuf[n]).abs().max())
    for n in ("image_features", "text_features"):
        out["output." + n] = float((outs[n].double() - ref_outs[n]).abs().max())
    return out


def write_png(path, rgb):
    """RGB uint8 (H, W, 3) as an 8-bit PNG (zlib and struct only)."""
    import struct
    import zlib

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(
            ">I", zlib.crc32(body) & 0xffffffff)
    H, W, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].tobytes() for y in range(H))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(rows)))
        f.write(chunk(b"IEND", b""))


CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def png_inputs(cfg, batch, seed, folder):
    """BATCH random R x R PNGs in FOLDER (img0.png ...), and the pixels
    cliptrain's loader makes of them: (v / 255 - mean) / std in float32,
    (B, 3, R, R)."""
    R = cfg["image_resolution"]
    rng = np.random.default_rng([seed, 30])
    px = rng.integers(0, 256, size=(batch, R, R, 3), dtype=np.uint8)
    os.makedirs(folder, exist_ok=True)
    for i in range(batch):
        write_png(os.path.join(folder, "img%d.png" % i), px[i])
    x = (px.astype(np.float32) / np.float32(255) - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)


def eval_image_features(model, images):
    """Eval-mode (running statistics) L2-normalised image features."""
    was = model.training
    model.eval()
    with torch.no_grad():
        f = model.encode_image(torch.from_numpy(images).to(
            next(model.parameters()).dtype))
        f = f / f.norm(dim=1, keepdim=True)
    model.train(was)
    return f.float().numpy()


def generate(cfg, batch, seed, torch_f32=False, masks=None, png_dir=None):
    """Build the ordered tensor dict of one case.  A ResNet case also holds
    output.eval.image_features (eval mode: the running statistics of
    buffer.* used, none moved).  TORCH_F32: also f32err.<name>, the
    largest max |error| of PyTorch float32 on each compared tensor over
    F32_RUNS runs: as stored, and with every parameter and image value
    moved by up to two float32 ulps (a float32 computation's own noise,
    where the case is ill-conditioned: a training-mode BatchNorm over a
    few values a channel).  MASKS: the ResNet
    ReLU patterns to force (read_masks); the case then holds
    masks.flips (I64) and masks.worst_margin (F32).  PNG_DIR: also write
    the batch as PNGs there and hold output.embed.image_features, their
    eval-mode features as `cliptrain embed` should give them.  Every case
    holds bf16err.grad.<name>: the relative L2 error of PyTorch's CPU
    autocast (bf16) on each gradient, and bf16err.output.<x>_features, its
    max |error| on the features: the yardstick of cliptrain's own
    half-precision passes."""
    torch.manual_seed(seed)
    model = tc.build_model(cfg)           # float32 init, OpenAI scheme
    model = model.double()
    gen = torch.Generator().manual_seed(seed + 1000003)
    perturb(model, gen)
    with torch.no_grad():  # a ResNet's running statistics, away from 0 / 1
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen,
                                          dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(1 + 0.2 * torch.randn(b.shape, generator=gen,
                                              dtype=torch.float64).abs())
            b.copy_(b.float().double())
    round_to_f32(model)

    images, tokens = make_inputs(cfg, batch, seed)
    resnet = isinstance(cfg["vision_layers"], tuple)
    f32 = copy.deepcopy(model).float() if torch_f32 else None
    autocast = bf16_errors(copy.deepcopy(model).float(), images, tokens)
    eval_feat = eval_image_features(model, images) if resnet else None
    embed_feat = None
    if png_dir:
        embed_feat = eval_image_features(model, png_inputs(cfg, batch, seed,
                                                           png_dir))
    mask_info = None
    if masks:
        mask_info = read_masks(model, torch.from_numpy(images).double(),
                               torch.from_numpy(tokens), masks)
        install_masks(model, mask_info[0])
        if f32 is not None:
            install_masks(f32, mask_info[0])
    t = case_tensors(model, cfg, images, tokens)
    if eval_feat is not None:
        t["output.eval.image_features"] = eval_feat
    if embed_feat is not None:
        t["output.embed.image_features"] = embed_feat
    for name, err in autocast.items():
        if name.startswith("grad."):
            err = np.sqrt(err) / max(np.linalg.norm(t[name].astype(np.float64)),
                                     1e-30)
        t["bf16err." + name] = np.array([err], dtype=np.float32)
    if mask_info is not None:
        t["masks.flips"] = np.array([mask_info[1]], dtype=np.int64)
        t["masks.worst_margin"] = np.array([mask_info[2]], dtype=np.float32)
    if f32 is not None:
        names = [n for n in t if n.startswith(("output.", "grad.")) and
                 not n.startswith(("output.eval.", "output.embed."))]
        worst = dict.fromkeys(names, 0.0)
        pgen = torch.Generator().manual_seed(seed + 77)
        for k in range(F32_RUNS):
            run = copy.deepcopy(f32)
            x = images
            if k:  # parameters and images moved by about two float32 ulps
                with torch.no_grad():
                    for p in run.parameters():
                        p.mul_(1 + 2.0 ** -22 * (2 * torch.rand(
                            p.shape, generator=pgen) - 1))
                x = images * (1 + 2.0 ** -22 * (2 * np.random.default_rng(
                    [seed, k]).random(images.shape) - 1)).astype(np.float32)
            t32 = case_tensors(run, cfg, x.astype(np.float32), tokens)
            for n in names:
                worst[n] = max(worst[n], float(np.abs(
                    t32[n].astype(np.float64) - t[n].astype(np.float64)).max()))
        for n in names:
            t["f32err." + n] = np.array([worst[n]], dtype=np.float32)
    return t


def make_inputs(cfg, batch, seed):
    """Seeded (images float32 [B,3,R,R] N(0,1), tokens int64 [B,L])."""
    rng = np.random.default_rng(seed)
    R = cfg["image_resolution"]
    images = rng.standard_normal((batch, 3, R, R)).astype(np.float32)
    tokens = make_tokens(rng, batch, cfg["context_length"], cfg["vocab_size"])
    return images, tokens


def case_tensors(model, cfg, images, tokens, param_shape=tc.case_param_shape):
    """Run forward/backward of ``model`` (in its dtype) on the inputs and
    return the ordered tensor dict of a case.

    ``param_shape(name, param)`` gives the shape param.<name> and
    grad.<name> are stored with (default: logit_scale as [1]).
    """
    dtype = next(model.parameters()).dtype
    stats = [(n, b) for n, b in model.named_buffers()
             if n.endswith("running_mean") or n.endswith("running_var")]
    before = {n: b.detach().float().numpy().copy() for n, b in stats}
    outs, grads = compute_case(model, torch.from_numpy(images).to(dtype),
                               torch.from_numpy(tokens))

    t = {}
    for k in tc.CONFIG_KEYS:
        v = cfg[k]
        t["config." + k] = np.array(list(v) if isinstance(v, (tuple, list))
                                    else [v], dtype=np.int64)
    for n, b in stats:  # pairs, as the golden ResNet case orders them
        t["buffer." + n] = before[n]
        t["output.buffer." + n] = b.detach().float().numpy()
    for name, p in model.named_parameters():
        shape = param_shape(name, p)
        t["param." + name] = p.detach().float().numpy().reshape(shape)
        t["grad." + name] = grads[name].float().numpy().reshape(shape)
    t["input.images"] = images
    t["input.tokens"] = tokens
    for k in ("image_features", "text_features", "logits_per_image", "loss"):
        t["output." + k] = outs[k].float().numpy()
    return t


def divisors(n, most):
    return [d for d in range(1, most + 1) if n % d == 0]


def random_config(draw, tower):
    """A random small configuration and batch for TOWER ('vit' or
    'resnet'), drawn from the numpy Generator DRAW.

    ResNet: 1-3 blocks in each stage, stem width 4-16 (even), resolution
    32k for k = 1..5, so that layer4's map is 1x1, 2x2 (even) or 3x3, 5x5
    (odd); pool heads any divisor (up to 8) of the pool width 32W.  ViT:
    1-3 blocks, patch 2-12, a grid of 1-6 patches a side (2 to 37 tokens),
    1-4 heads of width 4-16.  Text: 1-4 blocks, 1-4 heads of width 4-16,
    context 2-20, vocabulary 16-1000.  Batch 1-8, but 4-8 for a ResNet at
    32 px, whose layer4 BatchNorms see batch values a channel: PyTorch
    refuses one, and at two or three a training-mode BatchNorm's backward
    is so ill-conditioned that float32 (PyTorch's as ours) lands on the
    other side of ReLUs 4% of their range from 0."""
    cfg = {}
    th = int(draw.integers(1, 5))
    cfg.update(transformer_layers=int(draw.integers(1, 5)),
               transformer_heads=th,
               transformer_width=th * int(draw.choice([4, 8, 12, 16])),
               context_length=int(draw.integers(2, 21)),
               vocab_size=int(draw.integers(16, 1001)),
               embed_dim=int(draw.integers(4, 49)))
    if tower == "resnet":
        W = 2 * int(draw.integers(2, 9))
        k = int(draw.integers(1, 6))
        cfg.update(vision_layers=tuple(int(x) for x in draw.integers(1, 4, 4)),
                   vision_width=W, vision_patch_size=0,
                   image_resolution=32 * k,
                   vision_heads=int(draw.choice(divisors(32 * W, 8))))
        batch = int(draw.integers(4 if k == 1 else 1, 9))
    else:
        vh = int(draw.integers(1, 5))
        P = int(draw.integers(2, 13))
        cfg.update(vision_layers=int(draw.integers(1, 4)),
                   vision_heads=vh,
                   vision_width=vh * int(draw.choice([4, 8, 12, 16])),
                   vision_patch_size=P,
                   image_resolution=P * int(draw.integers(1, 7)))
        batch = int(draw.integers(1, 9))
    return cfg, batch


def describe(cfg, batch):
    """The command-line options that regenerate a case of CFG."""
    opts = []
    for k in DEFAULTS:
        v = cfg[k]
        v = ",".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
        opts.append("--%s %s" % (k.replace("_", "-"), v))
    return "--batch %d %s" % (batch, " ".join(opts))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--random", choices=("vit", "resnet"),
                    help="draw the configuration and batch from --seed "
                         "(the other config options are ignored)")
    ap.add_argument("--masks", help="force the ResNet's ReLU patterns to "
                    "those in this file (tests/unit/clip_parity --dump-masks)")
    ap.add_argument("--png-dir", help="also write the images as PNGs here "
                    "and their eval-mode features (output.embed.*)")
    ap.add_argument("--torch-f32", action="store_true",
                    help="also store PyTorch float32's own error on each "
                         "compared tensor (f32err.<name>)")
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"),
                        type=layers_arg if k == "vision_layers" else int,
                        default=v, dest=k)
    return ap.parse_args(argv)


def layers_arg(text):
    """'2' (a ViT's blocks) or '1,2,1,1' (a ResNet's blocks per stage)."""
    parts = [int(x) for x in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("vision_layers: 1 or 4 counts")
    return tuple(parts)


def main(argv=None):
    torch.set_default_dtype(torch.float32)
    a = parse_args(argv)
    if a.random:
        cfg, a.batch = random_config(np.random.default_rng([a.seed, 20]),
                                     a.random)
    else:
        cfg = {k: getattr(a, k) for k in DEFAULTS}
    resnet = isinstance(cfg["vision_layers"], tuple)
    if resnet != (cfg["vision_patch_size"] == 0):
        sys.exit("a ResNet (4 vision_layers) has vision_patch_size 0, a ViT not")
    if resnet and cfg["image_resolution"] % 32:
        sys.exit("a ResNet's image_resolution must be a multiple of 32")
    if not resnet and cfg["image_resolution"] % cfg["vision_patch_size"]:
        sys.exit("image_resolution must be a multiple of vision_patch_size")
    if (not resnet and cfg["vision_width"] % cfg["vision_heads"]) or \
            cfg["transformer_width"] % cfg["transformer_heads"]:
        sys.exit("widths must be multiples of their head counts")
    t = generate(cfg, a.batch, a.seed, a.torch_f32, a.masks, a.png_dir)
    how = ("--random %s --seed %d" % (a.random, a.seed) if a.random else
           "--seed %d %s" % (a.seed, describe(cfg, a.batch)))
    meta = {"case": "seed %d, batch %d, %s" % (a.seed, a.batch, describe(
                cfg, a.batch)[len("--batch %d " % a.batch):]),
            "regenerate": "tests/torch/gen_clip_case.py %s%s --out CASE" % (
                how, " --torch-f32" if a.torch_f32 else "")}
    tc.write_safetensors(a.out, t, metadata=meta)
    print("%s: %d tensors, %d bytes, loss %.6f (%s)" % (
        a.out, len(t), os.path.getsize(a.out), float(t["output.loss"][0]),
        meta["case"]))


if __name__ == "__main__":
    main()
