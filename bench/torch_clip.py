"""Reference PyTorch implementation of OpenAI's CLIP (ViT or ModifiedResNet
image tower).

This is the model cliptrain has to match.  It is the same network as the
``CLIP`` class of github.com/openai/CLIP (clip/model.py): the module tree,
the parameter and buffer names in ``state_dict()`` (and their order), the
initialisation and the forward pass are OpenAI's.  A tuple/list
``vision_layers`` (blocks per stage) selects the ModifiedResNet, as in
OpenAI's code.  It was written independently for cliptrain's tests and
benchmarks.

Besides the model this module holds:

* ``clip_forward_flops`` / ``clip_train_step_flops``: the FLOP count that the
  PyTorch and C benchmarks both report (see the docstrings for the formula);
* ``read_safetensors`` / ``write_safetensors``: a tiny hand-written
  safetensors reader/writer (F32 and I64 only), since no safetensors Python
  package is available here;
* ``CONFIG_KEYS`` and ``PRESETS``: the model configuration keys in the order
  the golden case files store them, and the benchmark presets;
* ``set_threads``: the benchmarks' thread count, for torch and for the
  OpenBLAS it calls.

Only Debian's system python with torch (1.13) and numpy is needed.
"""

import ctypes
import json
import math
import os
import struct
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The order in which the golden "CLIP case" files store config.* entries.
CONFIG_KEYS = (
    "embed_dim",
    "image_resolution",
    "vision_layers",
    "vision_width",
    "vision_patch_size",
    "context_length",
    "vocab_size",
    "transformer_width",
    "transformer_heads",
    "transformer_layers",
    "vision_heads",
)

# Benchmark presets.  "vitl14" is this project's variant (ViT-L/14 image tower
# with ViT-B/32's text tower and embed_dim 512), not OpenAI's released
# ViT-L/14 (which has embed_dim 768 and a 768-wide text tower).
PRESETS = {
    "tiny": dict(embed_dim=64, image_resolution=32, vision_layers=2,
                 vision_width=64, vision_patch_size=8, vision_heads=1,
                 context_length=16, vocab_size=1000, transformer_width=64,
                 transformer_heads=1, transformer_layers=2),
    "fashion": dict(embed_dim=128, image_resolution=28, vision_layers=4,
                    vision_width=128, vision_patch_size=7, vision_heads=2,
                    context_length=16, vocab_size=640, transformer_width=128,
                    transformer_heads=2, transformer_layers=2),
    "small": dict(embed_dim=256, image_resolution=64, vision_layers=4,
                  vision_width=256, vision_patch_size=8, vision_heads=4,
                  context_length=32, vocab_size=49408, transformer_width=256,
                  transformer_heads=4, transformer_layers=4),
    "vitb32": dict(embed_dim=512, image_resolution=224, vision_layers=12,
                   vision_width=768, vision_patch_size=32, vision_heads=12,
                   context_length=77, vocab_size=49408, transformer_width=512,
                   transformer_heads=8, transformer_layers=12),
    "vitl14": dict(embed_dim=512, image_resolution=224, vision_layers=24,
                   vision_width=1024, vision_patch_size=14, vision_heads=16,
                   context_length=77, vocab_size=49408, transformer_width=512,
                   transformer_heads=8, transformer_layers=12),
    # ModifiedResNet towers (vision_patch_size 0), as core/model/model-config.c's
    "rn50": dict(embed_dim=1024, image_resolution=224,
                 vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=0, vision_heads=32, context_length=77,
                 vocab_size=49408, transformer_width=512,
                 transformer_heads=8, transformer_layers=12),
    "rn101": dict(embed_dim=512, image_resolution=224,
                  vision_layers=(3, 4, 23, 3), vision_width=64,
                  vision_patch_size=0, vision_heads=32, context_length=77,
                  vocab_size=49408, transformer_width=512,
                  transformer_heads=8, transformer_layers=12),
    "rn50x4": dict(embed_dim=640, image_resolution=288,
                   vision_layers=(4, 6, 10, 6), vision_width=80,
                   vision_patch_size=0, vision_heads=40, context_length=77,
                   vocab_size=49408, transformer_width=640,
                   transformer_heads=10, transformer_layers=12),
    "rn": dict(embed_dim=64, image_resolution=64, vision_layers=(1, 1, 1, 1),
               vision_width=16, vision_patch_size=0, vision_heads=8,
               context_length=16, vocab_size=1000, transformer_width=64,
               transformer_heads=1, transformer_layers=2),
}


# --------------------------------------------------------------------------
# model


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (eps 1e-5) that never computes in half precision.

    OpenAI casts the input to float32 and the result back (for fp16 weights).
    Here inputs narrower than float32 are upcast to float32; float32 and
    float64 inputs are normalised in their own precision (so a float64 model
    stays float64 throughout, which the reference cases rely on).
    """

    def forward(self, x):
        orig = x.dtype
        if orig in (torch.float16, torch.bfloat16):
            y = F.layer_norm(x.float(), self.normalized_shape,
                             self.weight.float(), self.bias.float(), self.eps)
            return y.to(orig)
        return super().forward(x)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x)"""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)).

    Works on sequence-first tensors [L, N, D] like OpenAI's.  ``attn_mask`` is
    an additive [L, L] mask (the text tower's causal mask) or None.
    """

    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = None
        if self.attn_mask is not None:
            mask = self.attn_mask.to(dtype=x.dtype, device=x.device)
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[
            ResidualAttentionBlock(width, heads, attn_mask)
            for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads,
                 output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size,
                               stride=patch_size, bias=False)
        scale = width ** -0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)                          # [B, W, g, g]
        x = x.reshape(x.shape[0], x.shape[1], -1)  # [B, W, g*g]
        x = x.permute(0, 2, 1)                     # [B, g*g, W]
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)             # [B, g*g+1, W]
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)                     # [L, B, W]
        x = self.transformer(x)
        x = x.permute(1, 0, 2)                     # [B, L, W]
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class Bottleneck(nn.Module):
    """OpenAI's ResNet block: every convolution has stride 1; a stride > 1
    is an average pool after the 3x3 convolution (and in the shortcut,
    before its 1x1 convolution)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            # names as OpenAI's: "-1" the pool, "0" the conv, "1" the BN
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, stride=1,
                                bias=False)),
                ("1", nn.BatchNorm2d(planes * 4)),
            ]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu3(out)


class AttentionPool2d(nn.Module):
    """Tokens = [mean ; HW positions] + positional embedding; multi-head
    attention of token 0's query against all tokens; c_proj."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)        # [HW, B, C]
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x,
            embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias,
                                    self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training,
            need_weights=False)
        return out.squeeze(0)


class ModifiedResNet(nn.Module):
    """Stem of three 3x3 convolutions (the first stride 2) with BN and ReLU,
    a 2x2 average pool, four stages of Bottlenecks, an attention pool."""

    def __init__(self, layers, output_dim, heads, input_resolution=224,
                 width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim,
                                        heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        for _ in range(1, blocks):
            layers.append(Bottleneck(self._inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = x.type(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.attnpool(x)


class CLIP(nn.Module):
    """OpenAI CLIP with a ViT image tower.

    ``vision_heads`` defaults to OpenAI's choice, vision_width // 64.
    ``logit_scale`` is a 0-d parameter as in OpenAI's model (case files store
    it with shape [1]).
    """

    def __init__(self, embed_dim, image_resolution, vision_layers,
                 vision_width, vision_patch_size, context_length, vocab_size,
                 transformer_width, transformer_heads, transformer_layers,
                 vision_heads=None):
        super().__init__()
        self.context_length = context_length
        if isinstance(vision_layers, (tuple, list)):
            if vision_heads is None:
                vision_heads = vision_width * 32 // 64
            self.visual = ModifiedResNet(
                layers=vision_layers, output_dim=embed_dim,
                heads=vision_heads, input_resolution=image_resolution,
                width=vision_width)
        else:
            if vision_heads is None:
                vision_heads = vision_width // 64
            self.visual = VisionTransformer(
                input_resolution=image_resolution,
                patch_size=vision_patch_size, width=vision_width,
                layers=vision_layers, heads=vision_heads,
                output_dim=embed_dim)
        self.transformer = Transformer(
            width=transformer_width, layers=transformer_layers,
            heads=transformer_heads, attn_mask=self.build_attention_mask())
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(
            torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            ap = self.visual.attnpool
            std = ap.c_proj.in_features ** -0.5
            for lin in (ap.q_proj, ap.k_proj, ap.v_proj, ap.c_proj):
                nn.init.normal_(lin.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2,
                          self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)
        width = self.transformer.width
        attn_std = width ** -0.5
        proj_std = width ** -0.5 * (2 * self.transformer.layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def build_attention_mask(self):
        # additive causal mask: -inf strictly above the diagonal, 0 elsewhere
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float("-inf"))
        mask.triu_(1)
        return mask

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        return self.visual(image.to(self.dtype))

    def encode_text(self, text):
        x = self.token_embedding(text).to(self.dtype)  # [B, L, W]
        x = x + self.positional_embedding.to(self.dtype)
        x = x.permute(1, 0, 2)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).to(self.dtype)
        # features of the end token (the largest id of each row)
        x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
        return x @ self.text_projection

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1,
                                                              keepdim=True)
        text_features = text_features / text_features.norm(dim=1,
                                                            keepdim=True)
        logit_scale = self.logit_scale.exp()
        logits_per_image = logit_scale * image_features @ text_features.t()
        logits_per_text = logits_per_image.t()
        return logits_per_image, logits_per_text


def set_threads(n):
    """Run torch's own kernels and the BLAS it calls on N threads.

    torch.set_num_threads does not reach OpenBLAS, which Debian's torch
    calls through libblas.so.3: OpenBLAS keeps the thread count it read
    when it loaded (every core, unless OPENBLAS_NUM_THREADS says), so a
    "1 thread" run multiplied its matrices on all cores (168% CPU here).
    Returns the BLAS's thread count afterwards, or None when no loaded
    library has openblas_set_num_threads."""
    torch.set_num_threads(n)
    with open("/proc/self/maps") as maps:
        paths = sorted({ln.split()[-1] for ln in maps
                        if ln.rstrip().endswith(".so") or ".so." in ln})
    for path in paths:
        if "blas" not in os.path.basename(path):
            continue
        lib = ctypes.CDLL(path)  # already loaded: the same handle
        if hasattr(lib, "openblas_set_num_threads"):
            lib.openblas_set_num_threads(ctypes.c_int(n))
            return lib.openblas_get_num_threads()
    return None


def clip_forward_features(model, image, text):
    """(image_features, text_features, logits_per_image), features normalised."""
    img = model.encode_image(image)
    txt = model.encode_text(text)
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    logits = model.logit_scale.exp() * img @ txt.t()
    return img, txt, logits


def clip_loss(logits_per_image):
    """Symmetric contrastive loss: mean of the two cross-entropies, labels
    arange(B)."""
    n = logits_per_image.shape[0]
    labels = torch.arange(n, device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) +
            F.cross_entropy(logits_per_image.t(), labels)) / 2


# --------------------------------------------------------------------------
# FLOP count


def clip_forward_flops(cfg, batch):
    """Matmul FLOPs of one forward pass of CLIP (ViT) over ``batch`` pairs.

    Every matrix product counts 2*M*N*K.  With B = batch, E = embed_dim,
    image tower: P = vision_patch_size, g = image_resolution // P,
    Lv = g*g + 1 tokens, Wv = vision_width, nv = vision_layers;
    text tower: Lt = context_length (the FULL context, whatever the caption
    length, and the causal mask does not reduce the count), Wt =
    transformer_width, nt = transformer_layers:

      patch conv      2 * B * g*g * Wv * (3*P*P)
      per block (L tokens, width W), head count does not matter:
        in_proj       2 * B*L * W * 3W
        q @ k^T       2 * B * L * L * W      (summed over heads)
        p @ v         2 * B * L * L * W
        out_proj      2 * B*L * W * W
        c_fc          2 * B*L * W * 4W
        c_proj        2 * B*L * 4W * W
        = 24*B*L*W^2 + 4*B*L^2*W
      image blocks    nv * (24*B*Lv*Wv^2 + 4*B*Lv^2*Wv)
      text blocks     nt * (24*B*Lt*Wt^2 + 4*B*Lt^2*Wt)
      visual.proj     2 * B * Wv * E
      text_projection 2 * B * Wt * E
      logits          2 * B * B * E

    Not counted: embeddings (gathers), layer norms, QuickGELU, softmax,
    bias adds, residual adds, normalisation and the loss.
    """
    B = batch
    E = cfg["embed_dim"]
    Lt = cfg["context_length"]
    Wt = cfg["transformer_width"]

    def block(L, W):
        return 24 * B * L * W * W + 4 * B * L * L * W

    if isinstance(cfg["vision_layers"], (tuple, list)):
        flops = B * resnet_forward_flops(cfg)
        flops += cfg["transformer_layers"] * block(Lt, Wt)
        flops += 2 * B * Wt * E + 2 * B * B * E
        return flops
    P = cfg["vision_patch_size"]
    g = cfg["image_resolution"] // P
    Lv = g * g + 1
    Wv = cfg["vision_width"]
    flops = 2 * B * g * g * Wv * (3 * P * P)
    flops += cfg["vision_layers"] * block(Lv, Wv)
    flops += cfg["transformer_layers"] * block(Lt, Wt)
    flops += 2 * B * Wv * E + 2 * B * Wt * E
    flops += 2 * B * B * E
    return flops


def resnet_forward_flops(cfg):
    """Matmul FLOPs of the ModifiedResNet tower for one image: every
    convolution 2 * Ho*Wo * OC * (C*K*K); the attention pool's q (token 0
    only), k, v projections, scores and weighted sums (2 * 2*T*C) and
    c_proj.  Not counted: BN, ReLU, pooling, additions.  (core/model/model-config.c
    counts the same.)"""
    W, R, E = cfg["vision_width"], cfg["image_resolution"], cfg["embed_dim"]
    S = R / 2
    f = (2 * S * S * (W / 2) * 27 + 2 * S * S * (W / 2) * (W / 2) * 9 +
         2 * S * S * W * (W / 2) * 9)
    S /= 2
    inplanes = W
    for st, n in enumerate(cfg["vision_layers"]):
        P = W << st
        for j in range(n):
            s = 2 if j == 0 and st > 0 else 1
            So = S / s
            f += (2 * S * S * P * inplanes + 2 * S * S * P * P * 9 +
                  2 * So * So * 4 * P * P)
            if s > 1 or inplanes != 4 * P:
                f += 2 * So * So * 4 * P * inplanes
            inplanes = 4 * P
            S = So
    C, T = 32 * W, int(S * S) + 1
    f += 2 * C * C + 2 * 2 * T * C * C + 2 * 2 * T * C + 2 * C * E
    return f


def clip_train_step_flops(cfg, batch):
    """FLOPs of one training step: 3 x clip_forward_flops (forward + backward
    counted as twice the forward)."""
    return 3 * clip_forward_flops(cfg, batch)


# --------------------------------------------------------------------------
# safetensors (F32 / I64 only)

_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8"),
           "F64": np.dtype("<f8"), "I32": np.dtype("<i4")}


def read_safetensors(path, with_metadata=False):
    """Return an OrderedDict name -> numpy array, in file order.

    Shapes are taken as stored, so a 0-d tensor (shape []) comes back as a
    0-d array.  With ``with_metadata=True`` return ``(tensors, metadata)``,
    metadata being the ``__metadata__`` dict of strings ({} when absent).
    """
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"),
                        object_pairs_hook=OrderedDict)
    data = blob[8 + n:]
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"])
        out[name] = arr.copy()
    if with_metadata:
        return out, OrderedDict(header.get("__metadata__") or {})
    return out


def write_safetensors(path, tensors, metadata=None):
    """Write an ordered mapping name -> array (float32 / int64 only).

    Layout: 8-byte little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets}} (offsets relative to the data
    section), padded with spaces so that 8 + N is a multiple of 8, then the
    raw little-endian data in the same order.  ``metadata`` (a mapping of
    strings to strings), when given, is stored first as ``__metadata__``.
    """
    header = OrderedDict()
    if metadata is not None:
        header["__metadata__"] = OrderedDict(
            (str(k), str(v)) for k, v in metadata.items())
    chunks = []
    off = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype == np.float32:
            code, arr = "F32", arr.astype("<f4", copy=False)
        elif arr.dtype == np.int64:
            code, arr = "I64", arr.astype("<i8", copy=False)
        else:
            raise TypeError("%s: unsupported dtype %s" % (name, arr.dtype))
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = OrderedDict([("dtype", code),
                                    ("shape", list(arr.shape)),
                                    ("data_offsets", [off, off + len(raw)])])
        chunks.append(raw)
        off += len(raw)
    hjson = json.dumps(header).encode("utf-8")
    pad = (8 - (8 + len(hjson)) % 8) % 8
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in chunks:
            f.write(raw)


# --------------------------------------------------------------------------
# helpers for CLIP case files


def config_from_case(tensors):
    """Model config dict from a case's config.* entries."""
    cfg = {}
    for k in CONFIG_KEYS:
        v = tensors["config." + k]
        if k == "vision_layers" and v.size == 4:
            cfg[k] = tuple(int(x) for x in v.reshape(-1))  # a ResNet
            continue
        if v.size != 1:
            raise ValueError("config.%s has %d values" % (k, v.size))
        cfg[k] = int(v.reshape(-1)[0])
    return cfg


def build_model(cfg):
    return CLIP(**{k: cfg[k] for k in CONFIG_KEYS})


def load_case_params(model, tensors):
    """Copy param.* from a case into model (in the model's dtype)."""
    sd = dict(model.named_parameters())
    names = [k[len("param."):] for k in tensors if k.startswith("param.")]
    if set(names) != set(sd.keys()):
        missing = set(sd.keys()) - set(names)
        extra = set(names) - set(sd.keys())
        raise ValueError("parameter mismatch: missing %s, extra %s"
                         % (sorted(missing), sorted(extra)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = torch.from_numpy(tensors["param." + name])
            p.copy_(src.reshape(p.shape).to(p.dtype))
        for name, b in model.named_buffers():  # a ResNet's running stats
            if "buffer." + name in tensors:
                b.copy_(torch.from_numpy(tensors["buffer." + name]).to(b.dtype))


def case_param_shape(name, param):
    """Shape a parameter is stored with in a case file (logit_scale: [1])."""
    return [1] if param.dim() == 0 else list(param.shape)
