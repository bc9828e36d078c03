#!/usr/bin/python3
"""PyTorch twin of cliptrain's Fashion-MNIST recipe, for side-by-side runs.

Trains the model of a resolved recipe (RUN/recipe.yaml of `cliptrain fit`)
with its data, captions, tokenizer (RUN/vocab.txt), optimizer and schedule
(AdamW with a constant lr or fastai's one_cycle: lr and beta1 set before
every step as cliptrain's schedule does), and validates each epoch on the
test split as cliptrain does (CLIP loss on first-template captions,
zero-shot top-1/5).  Per epoch one JSON line:
train_time_s (cumulative), eval_time_s, epoch_time_s (like cliptrain's
"time"), samples_per_s, losses, zero_shot_top1/top5, blas_core.  Not
bit-identical to cliptrain (torch's RNG draws weights, order, templates).
Images are decoded once up front (time on stderr, not in train_time_s)."""

import argparse
import ctypes
import gzip
import html
import json
import math
import os
import re
import struct
import sys
import time

import numpy as np
import torch
import yaml
from PIL import Image

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_clip as tc  # noqa: E402

FASHION = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
           "shirt", "sneaker", "bag", "ankle boot"]
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
IDX_FILES = (("train_images", "train-images-idx3-ubyte.gz"),
             ("train_labels", "train-labels-idx1-ubyte.gz"),
             ("valid_images", "t10k-images-idx3-ubyte.gz"),
             ("valid_labels", "t10k-labels-idx1-ubyte.gz"))
# cliptrain's defaults (README, Recipes) for keys a hand-written recipe omits
OPT_DEFAULTS = dict(name="adamw", lr=5e-4, beta1=0.9, beta2=0.98, eps=1e-6,
                    weight_decay=0.2)
ONE_CYCLE = dict(div=25.0, div_final=1e5, pct_start=0.25, mom_start=0.95,
                 mom_mid=0.85, mom_end=0.95)


def combined_cos(pct, start, middle, end, pos):
    """fastai's combined_cos, as core/train/schedule.c evaluates it."""
    def cos_sched(a, b, p):
        return a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2
    if pos >= pct and pct < 1:
        return cos_sched(middle, end, (pos - pct) / (1 - pct))
    return cos_sched(start, middle, pos / pct)


def schedule(sched, lr, step, total):
    """(lr, beta1 or None) before training step STEP of TOTAL: fastai's
    fit_one_cycle (lr and mom) or a constant lr, as cliptrain's schedule."""
    if sched["name"] != "one_cycle":
        return lr, None
    pos, p = step / total, sched["pct_start"]
    return (combined_cos(p, lr / sched["div"], lr, lr / sched["div_final"], pos),
            combined_cos(p, sched["mom_start"], sched["mom_mid"],
                         sched["mom_end"], pos))


def blas_core():
    """OpenBLAS's kernels (torch's sgemm): Prescott on newer CPUs unless
    OPENBLAS_CORETYPE is set, which cliptrain does for itself."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


# -------------------------------------------------------------- recipe
def load_recipe(path):
    with open(path) as f:
        r = yaml.safe_load(f) or {}
    model = r.get("model") or {}
    cfg = dict(tc.PRESETS[model.get("preset") or "tiny"])
    cfg.update({k: int(v) for k, v in model.items() if k in tc.CONFIG_KEYS})
    cfg["vision_heads"] = cfg["vision_heads"] or cfg["vision_width"] // 64
    opt = dict(OPT_DEFAULTS, **{k: v for k, v in (r.get("optimizer") or {})
                                .items() if v is not None})
    # PyYAML (YAML 1.1) reads "1e-6" as a string: convert numbers here
    opt = {k: (v if k == "name" else float(v)) for k, v in opt.items()
           if k in OPT_DEFAULTS}
    sched = dict(ONE_CYCLE, **{k: v for k, v in (r.get("schedule") or {})
                               .items() if v is not None})
    sched["name"] = sched.get("name") or "const"
    if opt["name"] != "adamw" or sched["name"] not in ("const", "one_cycle"):
        raise SystemExit("only adamw with schedule const or one_cycle: got "
                         "%s, %s" % (opt["name"], sched["name"]))
    sched = {k: (v if k == "name" else float(v)) for k, v in sched.items()}
    data = r.get("data") or {}
    if data.get("dataset") != "idx" or data.get("classes") != "fashion_mnist":
        raise SystemExit("only data.dataset idx with classes fashion_mnist")
    templates = list(data.get("templates") or ["{label}"])
    zs = ([m["zero_shot"] or {} for m in r.get("metrics") or []
           if isinstance(m, dict) and "zero_shot" in m] or [{}])[-1]
    cap = data.get("captions") or {}  # class name -> label, as cliptrain
    fit = r.get("fit") or {}
    return dict(
        seed=int(r.get("seed") or 0), cfg=cfg, opt=opt, sched=sched,
        path=data.get("path") or "/usr/share/datasets/fashion-mnist",
        files=[data.get(k) or d for k, d in IDX_FILES],
        batch_size=int(data.get("batch_size") or 16),
        shuffle=data.get("shuffle", True) is not False,
        drop_last=data.get("drop_last", True) is not False,
        templates=templates, labels=[str(cap.get(n, n)) for n in FASHION],
        zs_labels=[str(cap.get(n, n))
                   for n in zs.get("class_names") or FASHION],
        zs_templates=list(zs.get("templates") or templates),
        epochs=int(fit.get("epochs") or 1),
        threads=int(fit.get("threads") or 2))


# ----------------------------------------------------------- tokenizer
def bytes_to_unicode():
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in bs]
    cs = bs + [*range(256, 256 + len(extra))]
    return dict(zip(bs + extra, map(chr, cs)))


class SimpleTokenizer:
    """OpenAI's clip/simple_tokenizer.py.  \\p{L} is approximated by
    [^\\W\\d_] and \\p{N} by \\d (exact for ASCII captions)."""

    PAT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|"
                     r"'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)

    def __init__(self, vocab_path):
        opener = gzip.open if vocab_path.endswith(".gz") else open
        with opener(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        # OpenAI's file holds more merges than its vocab uses: cap as it does
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]
                  if m.strip()]
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {}
        self.sot, self.eot = len(vocab) - 2, len(vocab) - 1

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                pair = i < len(word) - 1 and (word[i], word[i + 1]) == best
                out.append(word[i] + word[i + 1] if pair else word[i])
                i += 2 if pair else 1
            word = tuple(out)
        self.cache[token] = word
        return word

    def encode(self, text):
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for tok in self.PAT.findall(text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids += [self.encoder[w] for w in self.bpe(tok)]
        return ids

    def tokenize(self, texts, context_length):
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot] + self.encode(t) + [self.eot]
            if len(ids) > context_length:
                raise SystemExit("caption too long for the context: %r" % t)
            out[i, :len(ids)] = torch.tensor(ids)
        return out


# ---------------------------------------------------------------- data
def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        blob = f.read()
    ndim = blob[3]
    shape = struct.unpack(">" + "I" * ndim, blob[4:4 + 4 * ndim])
    return np.frombuffer(blob, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def preprocess(grey, res):
    """[N, h, w] uint8 -> [N, 3, res, res] float32, CLIP's transform."""
    if grey.shape[1:] != (res, res):  # bicubic resize (PIL) of a square
        grey = np.stack([np.asarray(Image.fromarray(g).convert("RGB").resize(
            (res, res), Image.BICUBIC))[..., 0] for g in grey])
    x = torch.from_numpy(grey.astype(np.float32) / 255.0)[:, None]
    return ((x.expand(-1, 3, -1, -1) - torch.tensor(MEAN).view(1, 3, 1, 1))
            / torch.tensor(STD).view(1, 3, 1, 1))


# ------------------------------------------------------------ training
def make_optimizer(model, o):
    no_decay = {"token_embedding.weight", "positional_embedding",
                "visual.positional_embedding"}
    decay, other = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and name not in no_decay else other).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o["weight_decay"]},
         {"params": other, "weight_decay": 0.0}],
        lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])


@torch.no_grad()
def evaluate(model, images, labels, val_tokens, class_tokens, n_tmpl, bs):
    """valid_loss (batch-size weighted) and zero-shot top-1 / top-5."""
    model.eval()
    f = model.encode_text(class_tokens)
    f = f / f.norm(dim=1, keepdim=True)
    cls = f.view(-1, n_tmpl, f.shape[1]).mean(1)
    cls = cls / cls.norm(dim=1, keepdim=True)
    loss_sum, top1, top5 = 0.0, 0, 0
    for i in range(0, len(images), bs):
        img, _, logits = tc.clip_forward_features(
            model, images[i:i + bs], val_tokens[i:i + bs])
        loss_sum += float(tc.clip_loss(logits)) * len(img)
        rank = (100.0 * img @ cls.t()).topk(5, dim=1).indices
        hit = rank == labels[i:i + bs, None]
        top1 += int(hit[:, 0].sum())
        top5 += int(hit.any(1).sum())
    model.train()
    return loss_sum / len(images), top1 / len(images), top5 / len(images)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe-yaml", required=True,
                    help="resolved recipe: RUN/recipe.yaml of cliptrain fit")
    ap.add_argument("--vocab", required=True, help="RUN/vocab.txt")
    ap.add_argument("--epochs", type=int, help="default: fit.epochs")
    ap.add_argument("--threads", type=int, help="default: fit.threads")
    ap.add_argument("--max-train", type=int, default=0,
                    help="train on the first N images only (0: all)")
    ap.add_argument("--max-valid", type=int, default=0,
                    help="validate on the first N test images only (0: all)")
    a = ap.parse_args(argv)
    r = load_recipe(a.recipe_yaml)
    cfg, bs = r["cfg"], r["batch_size"]
    epochs = a.epochs if a.epochs is not None else r["epochs"]
    tc.set_threads(a.threads or r["threads"])
    torch.manual_seed(r["seed"])

    t0 = time.perf_counter()
    tr_img, tr_lab, va_img, va_lab = (
        read_idx(os.path.join(r["path"], f))[:m or None] for f, m in
        zip(r["files"], [a.max_train] * 2 + [a.max_valid] * 2))
    t1 = time.perf_counter()
    res = cfg["image_resolution"]
    tr_x, va_x = preprocess(tr_img, res), preprocess(va_img, res)
    tr_y, va_y = (torch.from_numpy(y.astype(np.int64))
                  for y in (tr_lab, va_lab))
    t2 = time.perf_counter()

    tok = SimpleTokenizer(a.vocab)
    L, T = cfg["context_length"], len(r["templates"])
    # row label*T + t is template t filled with class label
    cap_tokens = tok.tokenize([t.replace("{label}", lab) for lab in r["labels"]
                               for t in r["templates"]], L)
    val_tokens = cap_tokens[va_y * T]  # validation: the first template
    zs_tokens = tok.tokenize([t.replace("{label}", lab) for lab in
                              r["zs_labels"] for t in r["zs_templates"]], L)
    print("decode %.2f s (read+gunzip %.2f s, transform %.2f s), %d+%d images"
          % (t2 - t0, t1 - t0, t2 - t1, len(tr_x), len(va_x)), file=sys.stderr)
    if tok.eot >= cfg["vocab_size"]:
        raise SystemExit("vocab.txt has more ids than model.vocab_size")

    model = tc.build_model(cfg).float().train()
    opt = make_optimizer(model, r["opt"])
    gen = torch.Generator().manual_seed(r["seed"])
    n = len(tr_x)
    n_batches = n // bs if r["drop_last"] else -(-n // bs)
    train_time, smooth, n_steps = 0.0, 0.0, 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = (torch.randperm(n, generator=gen) if r["shuffle"]
                 else torch.arange(n))
        tmpl = torch.randint(0, T, (n,), generator=gen)  # one per sample
        for b in range(n_batches):
            lr, mom = schedule(r["sched"], r["opt"]["lr"], n_steps,
                               epochs * n_batches)
            for g in opt.param_groups:
                g["lr"] = lr
                if mom is not None:
                    g["betas"] = (mom, r["opt"]["beta2"])
            idx = order[b * bs:(b + 1) * bs]
            tokens = cap_tokens[tr_y[idx] * T + tmpl[idx]]
            logits, _ = model(tr_x[idx], tokens)
            loss = tc.clip_loss(logits)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():  # as clip_trainer: clamp to [0, ln 100]
                model.logit_scale.clamp_(0.0, math.log(100.0))
            n_steps, smooth = n_steps + 1, 0.98 * smooth + 0.02 * float(loss)
        dt = time.perf_counter() - t0
        train_time += dt
        t1 = time.perf_counter()
        vloss, top1, top5 = evaluate(model, va_x, va_y, val_tokens, zs_tokens,
                                     len(r["zs_templates"]), bs)
        et = time.perf_counter() - t1
        print(json.dumps({
            "impl": "pytorch", "epoch": epoch, "blas_core": blas_core(),
            "train_time_s": round(train_time, 3), "eval_time_s": round(et, 3),
            "epoch_time_s": round(dt + et, 3),
            "samples_per_s": round(n_batches * bs / dt, 2),
            "train_loss": round(smooth / (1 - 0.98 ** n_steps), 6),
            "valid_loss": round(vloss, 6),
            "zero_shot_top1": top1, "zero_shot_top5": top5}), flush=True)


if __name__ == "__main__":
    main()
