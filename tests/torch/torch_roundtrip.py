#!/usr/bin/python3
"""Load weights written by cliptrain into PyTorch, and write a CLIP case back.

  tests/torch/torch_roundtrip.py [--seed N] [--batch B] IN_WEIGHTS OUT_CASE

IN_WEIGHTS is a safetensors file written by ``cliptrain init`` (or saved by
cliptrain): every parameter as F32 under OpenAI's state-dict names and the
model config in ``__metadata__`` ("config.embed_dim", ...).  This

  1. builds bench/torch_clip.py's CLIP with the config from the metadata and
     calls ``model.load_state_dict(state_dict, strict=True)`` with tensors
     made from the file: a missing or unexpected key or a differing shape
     (logit_scale must be 0-d, as in PyTorch) makes it fail loudly;
  2. checks that the loaded values equal the file's bit for bit;
  3. perturbs the parameters as tests/torch/gen_clip_case.py does (layer-norm gains
     1 + 0.1*N(0,1), biases + 0.05*N(0,1), logit_scale 2.3), makes seeded
     random inputs (tokens with start/end tokens, varying lengths, one row
     filling the context) and writes OUT_CASE in the golden "CLIP case"
     format, computed in float64.

Unlike gen_clip_case.py, param.* (and grad.*) are stored with the shapes of
``model.state_dict()`` exactly as PyTorch has them, so param.logit_scale is
0-d (shape []): tests/unit/clip_parity on OUT_CASE shows that a PyTorch
state_dict's shapes load into cliptrain.

Exit status 0 on success, non-zero (with a message on stderr) on any error.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
sys.path.insert(0, HERE)
import torch_clip as tc  # noqa: E402
import gen_clip_case as gcc  # noqa: E402


def config_from_metadata(meta, path):
    cfg = {}
    for k in tc.CONFIG_KEYS:
        key = "config." + k
        if key not in meta:
            raise SystemExit("%s: __metadata__ has no %s" % (path, key))
        try:
            cfg[k] = int(meta[key])
        except ValueError:
            raise SystemExit("%s: %s = %r is not an integer (only the ViT "
                             "image tower is supported)" % (path, key,
                                                            meta[key]))
    return cfg


def load_weights(path):
    """(model float32 with the file's weights loaded strictly, cfg)."""
    tensors, meta = tc.read_safetensors(path, with_metadata=True)
    cfg = config_from_metadata(meta, path)
    for name, arr in tensors.items():
        if arr.dtype != np.float32:
            raise SystemExit("%s: %s is %s, expected F32"
                             % (path, name, arr.dtype))
    torch.manual_seed(0)
    model = tc.build_model(cfg)  # float32
    state_dict = {name: torch.from_numpy(arr)
                  for name, arr in tensors.items()}
    # strict: raises RuntimeError on missing/unexpected keys and on any
    # shape mismatch (e.g. logit_scale stored as [1] instead of [])
    model.load_state_dict(state_dict, strict=True)

    # the loaded values are the file's, bit for bit, with the same shapes
    # (load_state_dict quietly accepts a [1] tensor for a 0-d parameter, as
    # a legacy convenience: a PyTorch state_dict has logit_scale 0-d)
    sd = model.state_dict()
    for name, arr in tensors.items():
        got = sd[name].detach().cpu().numpy()
        if list(got.shape) != list(arr.shape):
            raise SystemExit("%s: %s has shape %s in the file, %s in "
                             "PyTorch's state_dict" % (path, name,
                                                       list(arr.shape),
                                                       list(got.shape)))
        if got.dtype != np.float32 or got.tobytes() != arr.tobytes():
            raise SystemExit("%s: %s differs after load_state_dict"
                             % (path, name))
    return model, cfg, len(tensors)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("weights", metavar="IN_WEIGHTS")
    ap.add_argument("case", metavar="OUT_CASE")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the perturbation and the inputs")
    ap.add_argument("--batch", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_default_dtype(torch.float32)

    model, cfg, n = load_weights(a.weights)
    print("%s: %d tensors loaded with load_state_dict(strict=True), "
          "bit-identical; config %s" % (a.weights, n, cfg))

    model = model.double()
    sd_names = list(model.state_dict().keys())
    if sd_names != [name for name, _ in model.named_parameters()]:
        raise SystemExit("state_dict holds more than the parameters")
    gen = torch.Generator().manual_seed(a.seed + 1000003)
    gcc.perturb(model, gen)
    gcc.round_to_f32(model)
    images, tokens = gcc.make_inputs(cfg, a.batch, a.seed)

    sd = model.state_dict()

    def state_dict_shape(name, param):
        return list(sd[name].shape)  # logit_scale: [] as PyTorch has it

    t = gcc.case_tensors(model, cfg, images, tokens,
                         param_shape=state_dict_shape)
    for name, v in model.state_dict().items():
        ref = v.detach().float().numpy()
        if t["param." + name].shape != ref.shape or \
                t["param." + name].tobytes() != ref.tobytes():
            raise SystemExit("param.%s is not the state_dict's" % name)
    tc.write_safetensors(a.case, t)
    print("%s: %d tensors, param.logit_scale shape %s, loss %.6f" % (
        a.case, len(t), list(t["param.logit_scale"].shape),
        float(t["output.loss"][0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
