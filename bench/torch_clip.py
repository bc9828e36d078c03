"""Reference PyTorch implementation of OpenAI's CLIP (ViT image tower only).

This is the model cliptrain has to match.  It is the same network as the
``CLIP`` class of github.com/openai/CLIP (clip/model.py) with a ViT image
tower: the module tree, the parameter names in ``state_dict()`` (and their
order), the initialisation and the forward pass are OpenAI's.  It was written
independently for cliptrain's tests and benchmarks.

Besides the model this module holds:

* ``clip_forward_flops`` / ``clip_train_step_flops``: the FLOP count that the
  PyTorch and C benchmarks both report (see the docstrings for the formula);
* ``read_safetensors`` / ``write_safetensors``: a tiny hand-written
  safetensors reader/writer (F32 and I64 only), since no safetensors Python
  package is available here;
* ``CONFIG_KEYS`` and ``PRESETS``: the model configuration keys in the order
  the golden case files store them, and the benchmark presets.

Only Debian's system python with torch (1.13) and numpy is needed.
"""

import json
import math
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
        if not isinstance(vision_layers, int):
            raise ValueError("only the ViT image tower is implemented")
        if vision_heads is None:
            vision_heads = vision_width // 64
        self.context_length = context_length
        self.visual = VisionTransformer(
            input_resolution=image_resolution, patch_size=vision_patch_size,
            width=vision_width, layers=vision_layers, heads=vision_heads,
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
    P = cfg["vision_patch_size"]
    g = cfg["image_resolution"] // P
    Lv = g * g + 1
    Wv = cfg["vision_width"]
    Lt = cfg["context_length"]
    Wt = cfg["transformer_width"]

    def block(L, W):
        return 24 * B * L * W * W + 4 * B * L * L * W

    flops = 2 * B * g * g * Wv * (3 * P * P)
    flops += cfg["vision_layers"] * block(Lv, Wv)
    flops += cfg["transformer_layers"] * block(Lt, Wt)
    flops += 2 * B * Wv * E + 2 * B * Wt * E
    flops += 2 * B * B * E
    return flops


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
        if v.size != 1:
            raise ValueError("config.%s has %d values: not a ViT case"
                             % (k, v.size))
        cfg[k] = int(v.reshape(-1)[0])
    return cfg


def build_model(cfg):
    return CLIP(**{k: cfg[k] for k in CONFIG_KEYS})


def load_case_params(model, tensors):
    """Copy param.* from a case into model (in the model's dtype)."""
    sd = model.state_dict()
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


def case_param_shape(name, param):
    """Shape a parameter is stored with in a case file (logit_scale: [1])."""
    return [1] if param.dim() == 0 else list(param.shape)
