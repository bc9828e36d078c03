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

Usage: tests/gen_clip_case.py --out PATH --seed N [config options]
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "bench"))
import torch_clip as tc  # noqa: E402

DEFAULTS = dict(embed_dim=32, image_resolution=32, vision_layers=2,
                vision_width=64, vision_patch_size=8, vision_heads=2,
                context_length=16, vocab_size=1000, transformer_width=48,
                transformer_heads=4, transformer_layers=2)


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


def generate(cfg, batch, seed):
    """Build the ordered tensor dict of one case."""
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
    return case_tensors(model, cfg, images, tokens)


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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
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
    t = generate(cfg, a.batch, a.seed)
    tc.write_safetensors(a.out, t)
    print("%s: %d tensors, %d bytes, loss %.6f" % (
        a.out, len(t), os.path.getsize(a.out), float(t["output.loss"][0])))


if __name__ == "__main__":
    main()
