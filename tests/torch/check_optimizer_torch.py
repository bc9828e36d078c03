#!/usr/bin/python3
"""Cross-check cliptrain's CtOptimizer and CtSchedule against PyTorch.

Loads the built libcliptrain.so through ctypes and, on the "tiny" preset
model, runs each optimizer kind for several steps with random gradients and
lr / mom changing every step (as fastai's one_cycle does), next to PyTorch:

  adamw  torch.optim.AdamW (betas=(mom, sqr_mom), decoupled weight decay)
  adam   fastai's Adam is the same update with other defaults: checked
         against torch.optim.AdamW with fastai's (mom, 0.99), eps 1e-5,
         wd 0.01
  sgd    torch.optim.SGD(momentum=mom, dampening=0) with fastai's decoupled
         weight decay applied as p *= 1 - lr*wd before each step (torch's
         own weight_decay is L2, coupled)

with the tensors grouped as CtOptimizer groups them: decay or not (the
model's CtParamInfo.decay, which the default exclusions reproduce), an lr
multiplier of 0.5 on visual.* and 2 on visual.proj, and frozen
transformer.resblocks.0.* (left out of torch's optimizer).  Every parameter
must agree within 2e-6 absolute + 2e-5 relative after every step (float32
with a different order of operations: torch uses lerp for the first moment
and sqrt(v)/sqrt(1-b2^t)); frozen tensors must be bit-identical to the
start.

The schedules are checked against a transcription of fastai's SchedCos /
combine_scheds (fit_one_cycle, fit_flat_cos) and open_clip's
scheduler.py (cosine_lr, const_lr, const_lr_cooldown) at every step of a
few runs, within 1e-12 relative.

Usage: tests/torch/check_optimizer_torch.py [path/to/libcliptrain.so]
Exit status 0 when everything agrees.
"""

import ctypes as C
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class CtConfig(C.Structure):
    _fields_ = [(k, C.c_int) for k in (
        "embed_dim", "image_resolution", "vision_layers", "vision_width",
        "vision_patch_size", "vision_heads", "context_length", "vocab_size",
        "transformer_width", "transformer_heads", "transformer_layers")]


class CtParamInfo(C.Structure):
    _fields_ = [("name", C.c_char_p), ("offset", C.c_size_t),
                ("numel", C.c_size_t), ("ndim", C.c_int),
                ("shape", C.c_int64 * 4), ("decay", C.c_int),
                ("reserved", C.c_void_p * 2)]


def load_lib(path):
    lib = C.CDLL(path)
    sig = {
        "ct_config_preset": (C.c_int, [C.c_char_p, C.POINTER(CtConfig), C.c_void_p]),
        "ct_model_new": (C.c_void_p, [C.POINTER(CtConfig), C.c_int, C.c_void_p]),
        "ct_model_free": (None, [C.c_void_p]),
        "ct_model_init_weights": (None, [C.c_void_p, C.c_uint64]),
        "ct_model_n_params": (C.c_size_t, [C.c_void_p]),
        "ct_model_params": (C.POINTER(C.c_float), [C.c_void_p]),
        "ct_model_grads": (C.POINTER(C.c_float), [C.c_void_p]),
        "ct_model_n_tensors": (C.c_size_t, [C.c_void_p]),
        "ct_model_tensor": (C.POINTER(CtParamInfo), [C.c_void_p, C.c_size_t]),
        "ct_optimizer_new": (C.c_void_p, [C.c_void_p, C.c_char_p, C.c_void_p]),
        "ct_optimizer_free": (None, [C.c_void_p]),
        "ct_optimizer_set": (C.c_int, [C.c_void_p, C.c_char_p, C.c_double, C.c_void_p]),
        "ct_optimizer_get": (C.c_double, [C.c_void_p, C.c_char_p]),
        "ct_optimizer_set_lr_mult": (C.c_size_t, [C.c_void_p, C.c_char_p, C.c_double]),
        "ct_optimizer_freeze": (C.c_size_t, [C.c_void_p, C.c_char_p]),
        "ct_optimizer_decays": (C.c_int, [C.c_void_p, C.c_size_t]),
        "ct_optimizer_step": (None, [C.c_void_p]),
        "ct_schedule_new": (C.c_void_p, [C.c_char_p, C.c_void_p]),
        "ct_schedule_free": (None, [C.c_void_p]),
        "ct_schedule_set": (C.c_int, [C.c_void_p, C.c_char_p, C.c_double, C.c_void_p]),
        "ct_schedule_eval": (C.c_double, [C.c_void_p, C.c_int64, C.c_int64,
                                          C.POINTER(C.c_double)]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


def find_lib():
    if len(sys.argv) > 1:
        return sys.argv[1]
    top = os.path.normpath(os.path.join(HERE, "..", ".."))
    for d in (os.environ.get("CT_BUILDDIR"), top, os.getcwd()):
        if d:
            p = os.path.join(d, ".libs", "libcliptrain.so")
            if os.path.exists(p):
                return p
    raise SystemExit("libcliptrain.so not found: build first, or give its path")


# ---------------------------------------------------------------- optimizers

LR_MULT = [("visual.*", 0.5), ("visual.proj", 2.0)]
FROZEN = "transformer.resblocks.0."


def lr_mult_of(name):
    mult = 1.0
    for glob, m in LR_MULT:  # later wins, as in ct_optimizer_set_lr_mult
        if (glob.endswith("*") and name.startswith(glob[:-1])) or name == glob:
            mult = m
    return mult


def check_kind(lib, kind, steps=6, seed=0):
    cfg = CtConfig()
    assert lib.ct_config_preset(b"tiny", C.byref(cfg), None)
    model = lib.ct_model_new(C.byref(cfg), 1, None)
    lib.ct_model_init_weights(model, 11)
    n = lib.ct_model_n_params(model)
    P = np.ctypeslib.as_array(lib.ct_model_params(model), shape=(n,))
    G = np.ctypeslib.as_array(lib.ct_model_grads(model), shape=(n,))
    opt = lib.ct_optimizer_new(model, kind.encode(), None)
    assert opt, kind
    for glob, m in LR_MULT:
        assert lib.ct_optimizer_set_lr_mult(opt, glob.encode(), m) > 0
    assert lib.ct_optimizer_freeze(opt, (FROZEN + "*").encode()) > 0

    sgd = kind == "sgd"
    hp = {k: lib.ct_optimizer_get(opt, k.encode()) for k in ("lr", "mom", "sqr_mom", "eps", "wd")}
    if sgd:
        hp["wd"] = 0.05  # exercise fastai's decoupled decay
        assert lib.ct_optimizer_set(opt, b"wd", hp["wd"], None)

    # torch side: one Parameter per tensor, grouped by (decay, lr mult)
    tensors = []
    groups = {}
    start = P.copy()
    for i in range(lib.ct_model_n_tensors(model)):
        info = lib.ct_model_tensor(model, i).contents
        name = info.name.decode()
        assert bool(lib.ct_optimizer_decays(opt, i)) == bool(info.decay), name
        sl = slice(info.offset, info.offset + info.numel)
        t = torch.nn.Parameter(torch.from_numpy(P[sl].copy()))
        tensors.append((name, sl, t, bool(info.decay)))
        if name.startswith(FROZEN):
            continue
        key = (bool(info.decay), lr_mult_of(name))
        groups.setdefault(key, []).append(t)
    param_groups = [{"params": ps, "weight_decay": hp["wd"] if dec else 0.0, "mult": mult}
                    for (dec, mult), ps in groups.items()]
    if sgd:
        for g in param_groups:
            g["decoupled_wd"], g["weight_decay"] = g["weight_decay"], 0.0
        topt = torch.optim.SGD(param_groups, lr=hp["lr"], momentum=hp["mom"], dampening=0.0)
    else:
        topt = torch.optim.AdamW(param_groups, lr=hp["lr"], betas=(hp["mom"], hp["sqr_mom"]),
                                 eps=hp["eps"], foreach=False)

    rng = np.random.default_rng(seed)
    worst = 0.0
    for s in range(steps):
        lr = 3e-3 * (1 + s) / steps          # changing lr ...
        mom = 0.95 - 0.1 * s / (steps - 1)   # ... and mom, every step
        g = (rng.standard_normal(n) * 0.1).astype(np.float32)
        g[rng.random(n) < 0.05] = 0.0
        G[:] = g
        assert lib.ct_optimizer_set(opt, b"lr", lr, None)
        assert lib.ct_optimizer_set(opt, b"mom", mom, None)
        lib.ct_optimizer_step(opt)
        for pg in topt.param_groups:
            pg["lr"] = lr * pg["mult"]
            if sgd:
                pg["momentum"] = mom
            else:
                pg["betas"] = (mom, hp["sqr_mom"])
        with torch.no_grad():
            for name, sl, t, dec in tensors:
                t.grad = torch.from_numpy(g[sl].copy())
            if sgd:
                for pg in topt.param_groups:
                    for t in pg["params"]:
                        t.mul_(1 - pg["lr"] * pg["decoupled_wd"])
        topt.step()
        for name, sl, t, dec in tensors:
            got, want = P[sl], t.detach().numpy()
            if name.startswith(FROZEN):
                if not np.array_equal(got, start[sl]):
                    raise SystemExit("%s: frozen %s changed" % (kind, name))
                continue
            err = np.abs(got.astype(np.float64) - want)
            tol = 2e-6 + 2e-5 * np.abs(want)
            if np.any(err > tol):
                i = int(np.argmax(err - tol))
                raise SystemExit("%s step %d: %s[%d] = %.9g, torch %.9g"
                                 % (kind, s + 1, name, i, got[i], want[i]))
            worst = max(worst, float(err.max()))
    lib.ct_optimizer_free(opt)
    lib.ct_model_free(model)
    print("ok %s: %d steps, %d params, max |cliptrain - torch| = %.3g"
          % (kind, steps, n, worst))


# ---------------------------------------------------------------- schedules

def sched_cos(start, end):  # fastai
    return lambda pos: start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def combine_scheds(pcts, scheds):  # fastai, in float64
    cum = [0.0]
    for p in pcts:
        cum.append(cum[-1] + p)
    lim = len(cum) - 2

    def inner(pos):
        idx = min(max(i for i, c in enumerate(cum) if pos >= c), lim)
        return scheds[idx]((pos - cum[idx]) / (cum[idx + 1] - cum[idx]))
    return inner


def combined_cos(pct, start, middle, end):
    return combine_scheds([pct, 1 - pct], [sched_cos(start, middle), sched_cos(middle, end)])


def open_clip_cosine(base_lr, warmup, steps):
    def f(step):
        if step < warmup:
            return base_lr * (step + 1) / warmup
        e, es = step - warmup, steps - warmup
        return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr
    return f


def open_clip_cooldown(base_lr, warmup, steps, cooldown_steps, power, end_lr):
    def f(step):
        start = steps - cooldown_steps
        if step < warmup:
            return base_lr * (step + 1) / warmup
        if step < start:
            return base_lr
        e, es = step - start, steps - start
        return (1 - e / es) ** power * (base_lr - end_lr) + end_lr
    return f


def check_schedules(lib):
    cases = []
    total = 137
    for pct in (0.25, 0.3, 0.0):
        lr = 1e-2
        cases.append(("one_cycle", {"lr": lr, "pct_start": pct}, total,
                      combined_cos(pct, lr / 25, lr, lr / 1e5),
                      combined_cos(pct, 0.95, 0.85, 0.95)))
    for pct in (0.75, 0.25):
        cases.append(("flat_cos", {"lr": 3e-3, "pct_start": pct}, total,
                      combined_cos(pct, 3e-3, 3e-3, 3e-3 / 1e5), None))
    cases.append(("warmup_cosine", {"lr": 5e-4, "warmup": 20}, total,
                  open_clip_cosine(5e-4, 20, total), None))
    cases.append(("const_cooldown", {"lr": 5e-4, "warmup": 20, "cooldown_steps": 40,
                                     "cooldown_power": 1.5, "lr_end": 1e-6}, total,
                  open_clip_cooldown(5e-4, 20, total, 40, 1.5, 1e-6), None))
    cases.append(("const", {"lr": 5e-4, "warmup": 20}, total,
                  lambda s: 5e-4 * (s + 1) / 20 if s < 20 else 5e-4, None))
    fastai = {"one_cycle", "flat_cos"}
    for name, params, total, lr_f, mom_f in cases:
        s = lib.ct_schedule_new(name.encode(), None)
        assert s, name
        for k, v in params.items():
            assert lib.ct_schedule_set(s, k.encode(), float(v), None), (name, k)
        mom = C.c_double()
        for step in range(total):
            lr = lib.ct_schedule_eval(s, step, total, C.byref(mom))
            x = step / total if name in fastai else step
            want = lr_f(x)
            if abs(lr - want) > 1e-12 * abs(want) + 1e-18:
                raise SystemExit("%s %s step %d: lr %.17g, reference %.17g"
                                 % (name, params, step, lr, want))
            if mom_f is None:
                if not math.isnan(mom.value):
                    raise SystemExit("%s: mom %g, should be NAN" % (name, mom.value))
            elif abs(mom.value - mom_f(x)) > 1e-12:
                raise SystemExit("%s step %d: mom %.17g, reference %.17g"
                                 % (name, step, mom.value, mom_f(x)))
        lib.ct_schedule_free(s)
        print("ok schedule %s %s: %d steps" % (name, params, total))


def main():
    path = find_lib()
    lib = load_lib(path)
    print("# %s, torch %s" % (path, torch.__version__))
    for kind in ("adamw", "adam", "sgd"):
        check_kind(lib, kind)
    check_schedules(lib)
    print("all agree")


if __name__ == "__main__":
    main()
