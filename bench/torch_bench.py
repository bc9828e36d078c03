#!/usr/bin/python3
"""PyTorch side of cliptrain's side-by-side training benchmark.

Builds CLIP (bench/torch_clip.py, float32, OpenAI init) for a preset, makes
one synthetic batch (seeded N(0,1) images; token rows = start token, random
ids, end token at position caption_tokens-1, zero padding), runs one warm-up
training step (forward, contrastive loss, backward, AdamW step, zero_grad),
then times --steps such steps and prints one JSON line:

  {"impl": "pytorch", "torch": ..., "preset": ..., "batch": ...,
   "threads": ..., "blas_threads": ..., "samples_per_s": ..., "step_ms": ...,
   "gflop_per_s": ..., "peak_rss_mib": ...}

blas_threads is OpenBLAS's thread count as set by torch_clip.set_threads
(torch.set_num_threads alone leaves OpenBLAS on every core).

step_ms is the median step time; samples_per_s = batch / median step time;
gflop_per_s = clip_train_step_flops(cfg, batch) / median step time, where
the FLOP count is 3 x the forward matmul FLOPs (see
torch_clip.clip_forward_flops); peak_rss_mib = ru_maxrss / 1024 of this
process.  AdamW: lr 1e-4, betas (0.9, 0.98), eps 1e-6, weight_decay 0.2.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_clip as tc  # noqa: E402


def synthetic_batch(cfg, batch, caption_tokens, seed):
    g = torch.Generator().manual_seed(seed)
    R = cfg["image_resolution"]
    images = torch.randn(batch, 3, R, R, generator=g)
    V, L = cfg["vocab_size"], cfg["context_length"]
    tokens = torch.zeros(batch, L, dtype=torch.long)
    tokens[:, 0] = V - 2
    if caption_tokens > 2:
        tokens[:, 1:caption_tokens - 1] = torch.randint(
            1, V - 2, (batch, caption_tokens - 2), generator=g)
    tokens[:, caption_tokens - 1] = V - 1
    return images, tokens


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch CLIP training bench")
    ap.add_argument("--preset", default="small", choices=sorted(tc.PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--caption-tokens", type=int, default=None,
                    help="tokens per caption incl. start/end "
                         "(default: the whole context)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    cfg = dict(tc.PRESETS[a.preset])
    L = cfg["context_length"]
    cap = L if a.caption_tokens is None else a.caption_tokens
    if not 2 <= cap <= L:
        ap.error("--caption-tokens must be in [2, %d]" % L)
    if a.steps < 1 or a.batch < 1:
        ap.error("--steps and --batch must be >= 1")

    blas_threads = tc.set_threads(a.threads)
    if blas_threads is None:
        print("torch_bench: no loaded BLAS has openblas_set_num_threads; its thread "
              "count is its own", file=sys.stderr)
    torch.manual_seed(a.seed)
    model = tc.build_model(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98),
                            eps=1e-6, weight_decay=0.2)
    images, tokens = synthetic_batch(cfg, a.batch, cap, a.seed + 1)

    def step():
        logits, _ = model(images, tokens)
        loss = tc.clip_loss(logits)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flops = tc.clip_train_step_flops(cfg, a.batch)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "preset": a.preset,
        "batch": a.batch,
        "threads": a.threads,
        "blas_threads": blas_threads,
        "samples_per_s": round(a.batch / med, 4),
        "step_ms": round(med * 1000.0, 3),
        "gflop_per_s": round(flops / med / 1e9, 3),
        "peak_rss_mib": round(rss, 1),
    }))


if __name__ == "__main__":
    main()
