/* optimizer.c: fastai's Adam, torch's AdamW and fastai's SGD over a model's
 * flat parameter buffer, with per-tensor decay, lr multipliers, freezing
 * and step counts, and the state to and from safetensors. */
#include "config.h"

#include <cliptrain/optimizer.h>
#include <cliptrain/safetensors.h>

#include "base/parallel.h"
#include "base/precision.h"
#include "base/profile-private.h"
#include "base/vec.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KIND_ADAM, KIND_ADAMW, KIND_SGD, N_KINDS } Kind;

static const char *const kind_names[] = { "adam", "adamw", "sgd", NULL };

typedef enum { H_LR, H_MOM, H_SQR_MOM, H_EPS, H_WD, N_HYPERS } Hyper;

static const char *const hyper_names[N_HYPERS] = { "lr", "mom", "sqr_mom", "eps", "wd" };
static const char *const adam_hypers[] = { "lr", "mom", "sqr_mom", "eps", "wd", NULL };
static const char *const sgd_hypers[] = { "lr", "mom", "wd", NULL };

/* Defaults per kind, indexed by Hyper; NAN where the kind has none. */
static const double kind_defaults[N_KINDS][N_HYPERS] = {
  [KIND_ADAM] = { 1e-3, 0.9, 0.99, 1e-5, 0.01 },
  [KIND_ADAMW] = { 1e-3, 0.9, 0.98, 1e-6, 0.2 },
  [KIND_SGD] = { 1e-3, 0.9, NAN, NAN, 0.0 },
};

/* Buffer names: [0] first buffer, [1] second (NULL for sgd). */
static const char *const buffer_names[N_KINDS][2] = {
  [KIND_ADAM] = { "exp_avg", "exp_avg_sq" },
  [KIND_ADAMW] = { "exp_avg", "exp_avg_sq" },
  [KIND_SGD] = { "momentum_buffer", NULL },
};

static const char *const default_no_decay[] = {
  "*ln_*.weight", /* gains */
  "*.bias",
  "*_bias", /* attn.in_proj_bias */
  "logit_scale",
  "token_embedding.weight",
  "positional_embedding",
  "visual.positional_embedding",
  "visual.class_embedding",
  "*.bn?.weight", /* a ResNet's BatchNorm gains */
  "*.downsample.1.weight",
  "visual.attnpool.positional_embedding",
  NULL,
};

#define FORMAT_NAME "cliptrain-optimizer"

struct CtOptimizer {
  CtModel *model; /* borrowed */
  Kind kind;
  double hp[N_HYPERS];
  int64_t step;
  size_t n_tensors;
  size_t n_params;
  gboolean *frozen;  /* (n_tensors) */
  gboolean *decay;   /* (n_tensors) */
  double *lr_mult;   /* (n_tensors) set by globs */
  double *layer_scale; /* (n_tensors) layer-wise decay: decay^depth, 1 by default */
  int64_t *steps;    /* (n_tensors) each tensor's t */
  gboolean *ahead;   /* (n_tensors) stepped by ct_optimizer_step_range() in this step */
  GHashTable *index; /* tensor name (borrowed from the model) -> 1 + index */
  size_t shard_off, shard_n; /* the range whose state is kept: (0, n_params) unless sharded */
  float *buf[2];     /* (shard_n) each, for parameters [shard_off, +shard_n); buf[1] NULL for sgd */
  uint16_t *hbuf[2]; /* the same as bfloat16 codes, instead of buf (state_bf16) */
  gboolean state_bf16;
};

static gboolean
has_buf(const CtOptimizer *opt, int b)
{
  return opt->buf[b] || opt->hbuf[b];
}

/* (Re)allocate zeroed state buffers of N elements at the state precision. */
static void
alloc_state(CtOptimizer *opt, size_t n)
{
  for (int b = 0; b < 2; b++) {
    g_clear_pointer(&opt->buf[b], g_free);
    g_clear_pointer(&opt->hbuf[b], g_free);
    if (!buffer_names[opt->kind][b])
      continue;
    if (opt->state_bf16)
      opt->hbuf[b] = g_new0(uint16_t, MAX(n, (size_t) 1));
    else
      opt->buf[b] = g_new0(float, MAX(n, (size_t) 1));
  }
}

static gboolean
is_sharded(const CtOptimizer *opt)
{
  return opt->shard_n != opt->n_params;
}

const char *const *
ct_optimizer_kinds(void)
{
  return kind_names;
}

CtOptimizer *
ct_optimizer_new(CtModel *model, const char *kind, GError **error)
{
  g_return_val_if_fail(model != NULL, NULL);
  int k = -1;
  for (int i = 0; kind && i < N_KINDS; i++)
    if (strcmp(kind, kind_names[i]) == 0)
      k = i;
  if (k < 0) {
    g_autofree char *known = g_strjoinv(", ", (char **) kind_names);
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "unknown optimizer '%s' (known: %s)",
                kind ? kind : "(null)", known);
    return NULL;
  }
  CtOptimizer *opt = g_new0(CtOptimizer, 1);
  opt->model = model;
  opt->kind = (Kind) k;
  memcpy(opt->hp, kind_defaults[k], sizeof opt->hp);
  opt->n_tensors = ct_model_n_tensors(model);
  opt->n_params = ct_model_n_params(model);
  opt->frozen = g_new0(gboolean, opt->n_tensors);
  opt->decay = g_new0(gboolean, opt->n_tensors);
  opt->lr_mult = g_new(double, opt->n_tensors);
  opt->layer_scale = g_new(double, opt->n_tensors);
  opt->steps = g_new0(int64_t, opt->n_tensors);
  opt->ahead = g_new0(gboolean, opt->n_tensors);
  opt->index = g_hash_table_new(g_str_hash, g_str_equal);
  for (size_t i = 0; i < opt->n_tensors; i++) {
    opt->lr_mult[i] = 1.0;
    opt->layer_scale[i] = 1.0;
    g_hash_table_insert(opt->index, (gpointer) ct_model_tensor(model, i)->name,
                        GSIZE_TO_POINTER(i + 1));
  }
  opt->shard_n = opt->n_params;
  alloc_state(opt, opt->n_params);
  ct_optimizer_set_no_decay(opt, NULL);
  return opt;
}

void
ct_optimizer_free(CtOptimizer *opt)
{
  if (!opt)
    return;
  g_free(opt->frozen);
  g_free(opt->decay);
  g_free(opt->lr_mult);
  g_free(opt->layer_scale);
  g_free(opt->steps);
  g_free(opt->ahead);
  g_hash_table_unref(opt->index);
  for (int b = 0; b < 2; b++) {
    g_free(opt->buf[b]);
    g_free(opt->hbuf[b]);
  }
  g_free(opt);
}

const char *
ct_optimizer_kind(const CtOptimizer *opt)
{
  return kind_names[opt->kind];
}

CtModel *
ct_optimizer_model(const CtOptimizer *opt)
{
  return opt->model;
}

/* ---------------------------------------------------------------- hypers */

const char *const *
ct_optimizer_hyper_names(const CtOptimizer *opt)
{
  return opt->kind == KIND_SGD ? sgd_hypers : adam_hypers;
}

/* Index of hyper-parameter NAME (aliases resolved) that OPT's kind has,
 * or -1. */
static int
hyper_index(const CtOptimizer *opt, const char *name)
{
  if (!name)
    return -1;
  static const struct {
    const char *alias, *name;
  } aliases[] = { { "beta1", "mom" }, { "beta2", "sqr_mom" }, { "weight_decay", "wd" } };
  for (size_t i = 0; i < G_N_ELEMENTS(aliases); i++)
    if (strcmp(name, aliases[i].alias) == 0)
      name = aliases[i].name;
  for (int h = 0; h < N_HYPERS; h++)
    if (strcmp(name, hyper_names[h]) == 0)
      return isnan(kind_defaults[opt->kind][h]) ? -1 : h;
  return -1;
}

double
ct_optimizer_get(const CtOptimizer *opt, const char *name)
{
  g_return_val_if_fail(opt != NULL, NAN);
  int h = hyper_index(opt, name);
  return h < 0 ? NAN : opt->hp[h];
}

gboolean
ct_optimizer_set(CtOptimizer *opt, const char *name, double value, GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  int h = hyper_index(opt, name);
  if (h < 0) {
    g_autofree char *known = g_strjoinv(", ", (char **) ct_optimizer_hyper_names(opt));
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "optimizer %s has no hyper-parameter '%s' (it has: %s)", kind_names[opt->kind],
                name ? name : "(null)", known);
    return FALSE;
  }
  /* eps divides: 0 makes 0/0 of a gradient that stays 0 */
  gboolean ok = isfinite(value) && (h == H_EPS ? value > 0 : value >= 0);
  if (h == H_MOM || h == H_SQR_MOM)
    ok = ok && value < 1;
  if (!ok) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "optimizer hyper-parameter '%s' = %g is out of range (%s)", name, value,
                h == H_MOM || h == H_SQR_MOM ? "[0, 1)"
                : h == H_EPS                 ? "finite, > 0"
                                             : "finite, >= 0");
    return FALSE;
  }
  opt->hp[h] = value;
  return TRUE;
}

/* ---------------------------------------------------------------- groups */

const char *const *
ct_optimizer_default_no_decay(void)
{
  return default_no_decay;
}

static gboolean
match_any(const char *const *globs, const char *name)
{
  for (; *globs; globs++)
    if (g_pattern_match_simple(*globs, name))
      return TRUE;
  return FALSE;
}

size_t
ct_optimizer_set_no_decay(CtOptimizer *opt, const char *const *globs)
{
  g_return_val_if_fail(opt != NULL, 0);
  if (!globs)
    globs = default_no_decay;
  size_t n = 0;
  for (size_t i = 0; i < opt->n_tensors; i++) {
    gboolean excluded = match_any(globs, ct_model_tensor(opt->model, i)->name);
    opt->decay[i] = !excluded;
    n += excluded;
  }
  return n;
}

size_t
ct_optimizer_set_lr_mult(CtOptimizer *opt, const char *glob, double mult)
{
  g_return_val_if_fail(opt != NULL && glob != NULL, 0);
  g_return_val_if_fail(isfinite(mult) && mult >= 0, 0);
  size_t n = 0;
  for (size_t i = 0; i < opt->n_tensors; i++)
    if (g_pattern_match_simple(glob, ct_model_tensor(opt->model, i)->name)) {
      opt->lr_mult[i] = mult;
      n++;
    }
  return n;
}

static size_t
set_frozen(CtOptimizer *opt, const char *glob, gboolean frozen)
{
  g_return_val_if_fail(opt != NULL && glob != NULL, 0);
  size_t n = 0;
  for (size_t i = 0; i < opt->n_tensors; i++)
    if (g_pattern_match_simple(glob, ct_model_tensor(opt->model, i)->name)) {
      opt->frozen[i] = frozen;
      n++;
    }
  return n;
}

size_t
ct_optimizer_freeze(CtOptimizer *opt, const char *glob)
{
  return set_frozen(opt, glob, TRUE);
}

size_t
ct_optimizer_unfreeze(CtOptimizer *opt, const char *glob)
{
  return set_frozen(opt, glob, FALSE);
}

/* The tower's index for TOWER ("image", "text") and its lock-group count,
 * or FALSE with an error naming WHAT. */
static gboolean
tower_groups(const CtOptimizer *opt, const char *tower, const char *what, int *G,
             GError **error)
{
  *G = ct_model_n_lock_groups(opt->model, tower);
  if (*G < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "cannot %s tower '%s': the towers are 'image' and 'text'", what,
                tower ? tower : "(null)");
    return FALSE;
  }
  return TRUE;
}

/* Group of tensor I when it lies in TOWER, else -1. */
static int
group_in(const CtOptimizer *opt, size_t i, const char *tower)
{
  const char *t;
  int g = ct_model_lock_group(opt->model, i, &t);
  return t && strcmp(t, tower) == 0 ? g : -1;
}

gboolean
ct_optimizer_lock_groups(CtOptimizer *opt, const char *tower, int unlocked_groups,
                         gboolean unlock_norms, GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  int G;
  if (!tower_groups(opt, tower, "lock", &G, error))
    return FALSE;
  if (unlocked_groups < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "cannot lock the %s tower with %d unlocked groups", tower, unlocked_groups);
    return FALSE;
  }
  /* open_clip unlocks groups[-N:]; N = 0 locks every group */
  int first_unlocked = unlocked_groups == 0 ? G : MAX(G - unlocked_groups, 0);
  for (size_t i = 0; i < opt->n_tensors; i++) {
    int g = group_in(opt, i, tower);
    if (g < 0 || g >= first_unlocked)
      continue;
    if (unlock_norms && g_pattern_match_simple("*ln_*", ct_model_tensor(opt->model, i)->name))
      continue;
    opt->frozen[i] = TRUE;
  }
  return TRUE;
}

gboolean
ct_optimizer_lock_tower(CtOptimizer *opt, const char *tower, int unlocked_last_blocks,
                        gboolean unlock_norms, GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  int G;
  if (!tower_groups(opt, tower, "lock", &G, error))
    return FALSE;
  if (unlocked_last_blocks < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "cannot lock the %s tower with %d unlocked blocks", tower,
                unlocked_last_blocks);
    return FALSE;
  }
  if (strcmp(tower, "image") == 0 && ct_config_is_resnet(ct_model_config(opt->model)) &&
      unlocked_last_blocks > 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "cannot lock the image tower with %d unlocked blocks: a ResNet image tower "
                "has no blocks to count, but groups (lock_image: {unlocked_groups: N})",
                unlocked_last_blocks);
    return FALSE;
  }
  /* N blocks are open_clip's N + 1 groups: its last group is the projection alone */
  int groups = unlocked_last_blocks == 0 ? 0 : MIN(unlocked_last_blocks, G - 1) + 1;
  return ct_optimizer_lock_groups(opt, tower, groups, unlock_norms, error);
}

int
ct_optimizer_frozen_groups(const CtOptimizer *opt, const char *tower)
{
  g_return_val_if_fail(opt != NULL, -1);
  int G = ct_model_n_lock_groups(opt->model, tower);
  if (G < 0)
    return -1;
  /* the lowest group holding a tensor that trains */
  int lowest = G;
  for (size_t i = 0; i < opt->n_tensors; i++) {
    int g = group_in(opt, i, tower);
    if (g >= 0 && !opt->frozen[i])
      lowest = MIN(lowest, g);
  }
  return lowest;
}

gboolean
ct_optimizer_set_layer_decay(CtOptimizer *opt, const char *tower, double decay,
                             GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  int G;
  if (!tower_groups(opt, tower, "decay the learning rate of", &G, error))
    return FALSE;
  if (!(decay > 0 && decay <= 1)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "layer decay %g of the %s tower is out of range (0, 1]", decay, tower);
    return FALSE;
  }
  /* depth: the blocks above a group; G - 2 blocks (or a ResNet's 4
   * stages), and the last block shares the top's full rate */
  int D = G - 2;
  for (size_t i = 0; i < opt->n_tensors; i++) {
    int g = group_in(opt, i, tower);
    if (g >= 0)
      opt->layer_scale[i] = pow(decay, MAX(D - g, 0));
  }
  return TRUE;
}

size_t
ct_optimizer_n_trainable(const CtOptimizer *opt)
{
  size_t n = 0;
  for (size_t i = 0; i < opt->n_tensors; i++)
    if (!opt->frozen[i])
      n += ct_model_tensor(opt->model, i)->numel;
  return n;
}

gboolean
ct_optimizer_is_frozen(const CtOptimizer *opt, size_t i)
{
  g_return_val_if_fail(i < opt->n_tensors, FALSE);
  return opt->frozen[i];
}

gboolean
ct_optimizer_decays(const CtOptimizer *opt, size_t i)
{
  g_return_val_if_fail(i < opt->n_tensors, FALSE);
  return opt->decay[i];
}

double
ct_optimizer_lr_mult(const CtOptimizer *opt, size_t i)
{
  g_return_val_if_fail(i < opt->n_tensors, NAN);
  return opt->lr_mult[i] * opt->layer_scale[i];
}

double
ct_optimizer_layer_scale(const CtOptimizer *opt, size_t i)
{
  g_return_val_if_fail(i < opt->n_tensors, NAN);
  return opt->layer_scale[i];
}

int64_t
ct_optimizer_tensor_steps(const CtOptimizer *opt, size_t i)
{
  g_return_val_if_fail(i < opt->n_tensors, 0);
  return opt->steps[i];
}

/* ---------------------------------------------------------------- step */

/* The kernels: one pass over (n) elements, four at a time where the
 * compiler gives 4-float vectors and a vector sqrt (GCC cannot vectorise a
 * sqrtf loop itself without -fno-math-errno).  The vector and the scalar
 * loop do the same IEEE operations in the same order, so every element
 * gets the same bits either way. */
#if defined(__GNUC__) && (defined(__SSE2__) || defined(__aarch64__))
#define CT_V4 1
#if defined(__SSE2__)
#include <emmintrin.h>
#else
#include <arm_neon.h>
#endif
typedef float V4 __attribute__((vector_size(16)));

static inline V4
v4_load(const float *x)
{
  V4 r;
  memcpy(&r, x, sizeof r);
  return r;
}

static inline void
v4_store(float *x, V4 a)
{
  memcpy(x, &a, sizeof a);
}

static inline V4
v4_sqrt(V4 a)
{
#if defined(__SSE2__)
  return (V4) _mm_sqrt_ps((__m128) a);
#else
  return (V4) vsqrtq_f32((float32x4_t) a);
#endif
}

static inline V4
v4_set1(float a)
{
  return (V4) { a, a, a, a };
}
#endif

static void
adam_kernel(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
            size_t n, float decay, float mom, float sqr_mom, float step_size, float rbc2_sqrt,
            float eps)
{
  float dmom = 1.0f - mom, dsqr = 1.0f - sqr_mom;
  size_t i = 0;
#ifdef CT_V4
  V4 vmom = v4_set1(mom), vdmom = v4_set1(dmom), vsqr = v4_set1(sqr_mom), vdsqr = v4_set1(dsqr);
  V4 vdecay = v4_set1(decay), vstep = v4_set1(step_size), vrbc2 = v4_set1(rbc2_sqrt);
  V4 veps = v4_set1(eps);
  for (; i + 4 <= n; i += 4) {
    V4 gi = v4_load(g + i);
    V4 mi = vmom * v4_load(m + i) + vdmom * gi;
    V4 vi = vsqr * v4_load(v + i) + vdsqr * gi * gi;
    v4_store(m + i, mi);
    v4_store(v + i, vi);
    v4_store(p + i, v4_load(p + i) * vdecay - vstep * (mi / (v4_sqrt(vi) * vrbc2 + veps)));
  }
#endif
  for (; i < n; i++) {
    float gi = g[i];
    float mi = mom * m[i] + dmom * gi;
    float vi = sqr_mom * v[i] + dsqr * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) * rbc2_sqrt + eps));
  }
}

static void
sgd_kernel(float *restrict p, const float *restrict g, float *restrict b, size_t n, float decay,
           float mom, float lr)
{
  size_t i = 0;
#ifdef CT_V4
  V4 vmom = v4_set1(mom), vdecay = v4_set1(decay), vlr = v4_set1(lr);
  for (; i + 4 <= n; i += 4) {
    V4 bi = vmom * v4_load(b + i) + v4_load(g + i);
    v4_store(b + i, bi);
    v4_store(p + i, v4_load(p + i) * vdecay - vlr * bi);
  }
#endif
  for (; i < n; i++) {
    float bi = mom * b[i] + g[i];
    b[i] = bi;
    p[i] = p[i] * decay - lr * bi;
  }
}

/* bfloat16 state.  A moment is widened to float32 (exact), updated with
 * the operations of the float32 kernels, and stored back by stochastic
 * rounding: random low bits are added before truncating to 16 bits, so
 * that the stored value is unbiased (round to nearest would let a second
 * moment with beta2 near 1 stop moving, its updates below half a unit in
 * the last place).  The random bits are a hash of (step, element), its
 * low half for the first buffer and its high half for the second, so the
 * bits do not depend on the thread count or the order of work. */
static inline float
bf16_load(uint16_t h)
{
  uint32_t u = (uint32_t) h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The random bits: murmur3's finaliser of (element I, step and buffer
 * TB), in 32-bit integer operations that vectorise, for a uint32_t or a
 * vector of them: the one definition behind sr_bits, sr_bits4 and
 * sr_bits16. */
#define SR_HASH(x, i, tb)                       \
  do {                                          \
    (x) = (i) * 0x9e3779b1u ^ (tb) * 0x85ebca77u; \
    (x) ^= (x) >> 16;                           \
    (x) *= 0x85ebca6bu;                         \
    (x) ^= (x) >> 13;                           \
    (x) *= 0xc2b2ae35u;                         \
    (x) ^= (x) >> 16;                           \
  } while (0)

static inline uint32_t
sr_bits(uint32_t i, uint32_t tb)
{
  uint32_t x;
  SR_HASH(x, i, tb);
  return x;
}

static inline uint16_t
bf16_store(float f, uint32_t bits)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) /* inf and NaN stay what they are */
    return (uint16_t) ((u >> 16) | ((u & 0xffffu) ? 0x40u : 0u));
  return (uint16_t) ((u + (bits & 0xffffu)) >> 16);
}

#ifdef CT_V4
typedef uint32_t U4 __attribute__((vector_size(16)));
typedef uint16_t H4 __attribute__((vector_size(8)));

static inline V4
bf16_load4(const uint16_t *h)
{
  H4 x;
  memcpy(&x, h, sizeof x);
  U4 u = __builtin_convertvector(x, U4) << 16;
  return (V4) u;
}

/* Four bf16_store()s; the same bits. */
static inline void
bf16_store4(uint16_t *h, V4 f, U4 bits)
{
  U4 u = (U4) f;
  U4 special = (u & 0x7f800000u) == 0x7f800000u; /* all ones where inf or NaN */
  U4 quiet = (u >> 16) | (((u & 0xffffu) != 0) & 0x40u);
  U4 r = (u + (bits & 0xffffu)) >> 16;
  r = (special & quiet) | (~special & r);
  H4 out = __builtin_convertvector(r, H4);
  memcpy(h, &out, sizeof out);
}

static inline U4
sr_bits4(U4 i, uint32_t tb)
{
  U4 x;
  SR_HASH(x, i, tb);
  return x;
}

/* Sixteen lanes: the bfloat16 kernels are bound by their integer work (the
 * hash, the conversions), which 16 lanes do in one AVX-512 instruction, or
 * two AVX2 ones, where 4 lanes took four; on a baseline CPU the compiler
 * splits them into 4-lane instructions.  The same operations lane by lane,
 * so the same bits. */
/* The helpers are always inlined (vec.h says why). */
typedef uint32_t U16 __attribute__((vector_size(64)));
typedef uint16_t H16 __attribute__((vector_size(32)));

CT_INLINE V16
v16_sqrt(V16 a)
{
  V4 q[4];
  memcpy(q, &a, sizeof q);
  for (int k = 0; k < 4; k++)
    q[k] = v4_sqrt(q[k]);
  memcpy(&a, q, sizeof a);
  return a;
}

CT_INLINE V16
bf16_load16(const uint16_t *h)
{
  H16 x;
  memcpy(&x, h, sizeof x);
  U16 u = __builtin_convertvector(x, U16) << 16;
  return (V16) u;
}

/* Sixteen bf16_store()s; the same bits. */
CT_INLINE void
bf16_store16(uint16_t *h, V16 f, U16 bits)
{
  U16 u = (U16) f;
  U16 special = (u & 0x7f800000u) == 0x7f800000u;
  U16 quiet = (u >> 16) | (((u & 0xffffu) != 0) & 0x40u);
  U16 r = (u + (bits & 0xffffu)) >> 16;
  r = (special & quiet) | (~special & r);
  H16 out = __builtin_convertvector(r, H16);
  memcpy(h, &out, sizeof out);
}

CT_INLINE U16
sr_bits16(uint32_t k, uint32_t tb)
{
  U16 i = (U16) { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 } + k, x;
  SR_HASH(x, i, tb);
  return x;
}
#endif

/* The stochastic-rounding stream of step T. */
static inline uint32_t
sr_stream(uint64_t t)
{
  return (uint32_t) t;
}

/* CT_CLONES (vec.h): AVX-512 or AVX2 where the CPU has them (native
 * 32-bit multiplies for the hash); the same operations, so the same bits,
 * as the baseline build. */

CT_CLONES static void
adam_kernel_bf16(float *restrict p, const float *restrict g, uint16_t *restrict m,
                 uint16_t *restrict v, size_t n, float decay, float mom, float sqr_mom,
                 float step_size, float rbc2_sqrt, float eps, size_t base, uint64_t t)
{
  float dmom = 1.0f - mom, dsqr = 1.0f - sqr_mom;
  uint32_t s = sr_stream(t); /* low 16 bits for m, high 16 for v */
  size_t i = 0;
#ifdef CT_V4
  V4 vmom = v4_set1(mom), vdmom = v4_set1(dmom), vsqr = v4_set1(sqr_mom), vdsqr = v4_set1(dsqr);
  V4 vdecay = v4_set1(decay), vstep = v4_set1(step_size), vrbc2 = v4_set1(rbc2_sqrt);
  V4 veps = v4_set1(eps);
  {
    V16 wmom = v16_set1(mom), wdmom = v16_set1(dmom), wsqr = v16_set1(sqr_mom);
    V16 wdsqr = v16_set1(dsqr), wdecay = v16_set1(decay), wstep = v16_set1(step_size);
    V16 wrbc2 = v16_set1(rbc2_sqrt), weps = v16_set1(eps);
    for (; i + 16 <= n; i += 16) {
      V16 gi = v16_load(g + i);
      V16 mi = wmom * bf16_load16(m + i) + wdmom * gi;
      V16 vi = wsqr * bf16_load16(v + i) + wdsqr * gi * gi;
      v16_store(p + i, v16_load(p + i) * wdecay - wstep * (mi / (v16_sqrt(vi) * wrbc2 + weps)));
      U16 bits = sr_bits16((uint32_t) (base + i), s);
      bf16_store16(m + i, mi, bits);
      bf16_store16(v + i, vi, bits >> 16);
    }
  }
  for (; i + 4 <= n; i += 4) {
    uint32_t k = (uint32_t) (base + i);
    U4 idx = { k, k + 1, k + 2, k + 3 };
    V4 gi = v4_load(g + i);
    V4 mi = vmom * bf16_load4(m + i) + vdmom * gi;
    V4 vi = vsqr * bf16_load4(v + i) + vdsqr * gi * gi;
    v4_store(p + i, v4_load(p + i) * vdecay - vstep * (mi / (v4_sqrt(vi) * vrbc2 + veps)));
    U4 bits = sr_bits4(idx, s);
    bf16_store4(m + i, mi, bits);
    bf16_store4(v + i, vi, bits >> 16);
  }
#endif
  for (; i < n; i++) {
    float gi = g[i];
    float mi = mom * bf16_load(m[i]) + dmom * gi;
    float vi = sqr_mom * bf16_load(v[i]) + dsqr * gi * gi;
    p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) * rbc2_sqrt + eps));
    uint32_t bits = sr_bits((uint32_t) (base + i), s);
    m[i] = bf16_store(mi, bits);
    v[i] = bf16_store(vi, bits >> 16);
  }
}

CT_CLONES static void
sgd_kernel_bf16(float *restrict p, const float *restrict g, uint16_t *restrict b, size_t n,
                float decay, float mom, float lr, size_t base, uint64_t t)
{
  uint32_t s0 = sr_stream(t);
  size_t i = 0;
#ifdef CT_V4
  V4 vmom = v4_set1(mom), vdecay = v4_set1(decay), vlr = v4_set1(lr);
  {
    V16 wmom = v16_set1(mom), wdecay = v16_set1(decay), wlr = v16_set1(lr);
    for (; i + 16 <= n; i += 16) {
      V16 bi = wmom * bf16_load16(b + i) + v16_load(g + i);
      v16_store(p + i, v16_load(p + i) * wdecay - wlr * bi);
      bf16_store16(b + i, bi, sr_bits16((uint32_t) (base + i), s0));
    }
  }
  for (; i + 4 <= n; i += 4) {
    uint32_t k = (uint32_t) (base + i);
    U4 idx = { k, k + 1, k + 2, k + 3 };
    V4 bi = vmom * bf16_load4(b + i) + v4_load(g + i);
    v4_store(p + i, v4_load(p + i) * vdecay - vlr * bi);
    bf16_store4(b + i, bi, sr_bits4(idx, s0));
  }
#endif
  for (; i < n; i++) {
    float bi = mom * bf16_load(b[i]) + g[i];
    p[i] = p[i] * decay - lr * bi;
    b[i] = bf16_store(bi, sr_bits((uint32_t) (base + i), s0));
  }
}

/* One tensor's update on the thread pool: elements are independent and
 * each gets the same operations whatever its range, so the bits do not
 * depend on the thread count. */
typedef struct {
  gboolean sgd;
  float *p, *m, *v;
  uint16_t *hm, *hv; /* bfloat16 state instead of m, v */
  size_t base;       /* the flat index of element 0, for stochastic rounding */
  uint64_t t;        /* the optimizer's step */
  const float *g;
  float decay, mom, sqr_mom, step_size, rbc2_sqrt, eps, lr;
} StepJob;

static void
step_range(void *ctx, size_t b, size_t e, int thread)
{
  const StepJob *j = ctx;
  if (j->hm && j->sgd)
    sgd_kernel_bf16(j->p + b, j->g + b, j->hm + b, e - b, j->decay, j->mom, j->lr, j->base + b,
                    j->t);
  else if (j->hm)
    adam_kernel_bf16(j->p + b, j->g + b, j->hm + b, j->hv + b, e - b, j->decay, j->mom,
                     j->sqr_mom, j->step_size, j->rbc2_sqrt, j->eps, j->base + b, j->t);
  else if (j->sgd)
    sgd_kernel(j->p + b, j->g + b, j->m + b, e - b, j->decay, j->mom, j->lr);
  else
    adam_kernel(j->p + b, j->g + b, j->m + b, j->v + b, e - b, j->decay, j->mom, j->sqr_mom,
                j->step_size, j->rbc2_sqrt, j->eps);
}

/* Tensor TI's update in the step whose count (1-based) is STEP: the
 * stochastic-rounding stream and nothing else depends on STEP, so a tensor
 * stepped ahead (ct_optimizer_step_range) gets the bits it would get in
 * ct_optimizer_step(). */
static void
step_tensor(CtOptimizer *opt, size_t ti, int64_t step, const float *grads, size_t grads_off)
{
  float *p = ct_model_params(opt->model);
  const double *hp = opt->hp;
  const CtParamInfo *info = ct_model_tensor(opt->model, ti);
  int64_t t = ++opt->steps[ti];
  double lr = hp[H_LR] * (opt->lr_mult[ti] * opt->layer_scale[ti]);
  float decay = opt->decay[ti] ? (float) (1.0 - lr * hp[H_WD]) : 1.0f;
  /* the part of the tensor in the shard: [lo, hi) of the flat layout */
  size_t lo = MAX(info->offset, opt->shard_off);
  size_t hi = MIN(info->offset + info->numel, opt->shard_off + opt->shard_n);
  if (lo >= hi)
    return; /* another shard's: the step count above still moves */
  size_t o = lo, so = lo - opt->shard_off;
  StepJob j = { .sgd = opt->kind == KIND_SGD, .p = p + o, .g = grads + (o - grads_off),
                .m = opt->buf[0] ? opt->buf[0] + so : NULL,
                .hm = opt->hbuf[0] ? opt->hbuf[0] + so : NULL, .base = lo,
                .t = (uint64_t) step, .decay = decay, .mom = (float) hp[H_MOM],
                .lr = (float) lr };
  if (!j.sgd) {
    /* fastai's debias with the current betas: 1 - beta^t */
    double bc1 = 1.0 - pow(hp[H_MOM], (double) t);
    double bc2 = 1.0 - pow(hp[H_SQR_MOM], (double) t);
    j.v = opt->buf[1] ? opt->buf[1] + so : NULL;
    j.hv = opt->hbuf[1] ? opt->hbuf[1] + so : NULL;
    j.sqr_mom = (float) hp[H_SQR_MOM];
    j.step_size = (float) (lr / bc1);
    j.rbc2_sqrt = (float) (1.0 / sqrt(bc2));
    j.eps = (float) hp[H_EPS];
  }
  ct_parallel_for(hi - lo, 32768, step_range, &j);
}

static void optimizer_step(CtOptimizer *opt);

void
ct_optimizer_step(CtOptimizer *opt)
{
  PROF(CT_PROF_OPTIMIZER, optimizer_step(opt));
}

static void
optimizer_step(CtOptimizer *opt)
{
  g_return_if_fail(opt != NULL);
  g_return_if_fail(ct_model_n_params(opt->model) == opt->n_params);
  opt->step++;
  for (size_t ti = 0; ti < opt->n_tensors; ti++)
    if (!opt->frozen[ti] && !opt->ahead[ti])
      step_tensor(opt, ti, opt->step, ct_model_grads(opt->model), 0);
  memset(opt->ahead, 0, opt->n_tensors * sizeof *opt->ahead);
}

static void
optimizer_step_range(CtOptimizer *opt, size_t offset, size_t n, const float *grads)
{
  for (size_t ti = 0; ti < opt->n_tensors; ti++) {
    const CtParamInfo *info = ct_model_tensor(opt->model, ti);
    if (opt->frozen[ti] || opt->ahead[ti] || info->offset < offset ||
        info->offset + info->numel > offset + n)
      continue;
    step_tensor(opt, ti, opt->step + 1, grads, offset);
    opt->ahead[ti] = TRUE;
  }
}

void
ct_optimizer_step_range(CtOptimizer *opt, size_t offset, size_t n)
{
  g_return_if_fail(opt != NULL);
  g_return_if_fail(ct_model_n_params(opt->model) == opt->n_params);
  PROF(CT_PROF_OPTIMIZER,
       optimizer_step_range(opt, offset, n, ct_model_grads(opt->model) + offset));
}

void
ct_optimizer_step_range_from(CtOptimizer *opt, size_t offset, size_t n, const float *grads)
{
  g_return_if_fail(opt != NULL && grads != NULL);
  g_return_if_fail(ct_model_n_params(opt->model) == opt->n_params);
  g_return_if_fail(offset <= opt->n_params && n <= opt->n_params - offset);
  PROF(CT_PROF_OPTIMIZER, optimizer_step_range(opt, offset, n, grads));
}

int64_t
ct_optimizer_step_count(const CtOptimizer *opt)
{
  return opt->step;
}

void
ct_optimizer_clear_state(CtOptimizer *opt)
{
  g_return_if_fail(opt != NULL);
  opt->step = 0;
  memset(opt->steps, 0, opt->n_tensors * sizeof *opt->steps);
  for (int b = 0; b < 2; b++) {
    if (opt->buf[b])
      memset(opt->buf[b], 0, opt->shard_n * sizeof(float));
    if (opt->hbuf[b])
      memset(opt->hbuf[b], 0, opt->shard_n * sizeof(uint16_t));
  }
}

gboolean
ct_optimizer_set_shard(CtOptimizer *opt, size_t offset, size_t n, GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  if (offset > opt->n_params || n > opt->n_params - offset) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "optimizer shard [%zu, %zu) lies outside the model's %zu parameters", offset,
                offset + n, opt->n_params);
    return FALSE;
  }
  if (opt->step > 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "the optimizer has taken %" G_GINT64_FORMAT " steps: shard it before the first",
                opt->step);
    return FALSE;
  }
  opt->shard_off = offset;
  opt->shard_n = n;
  alloc_state(opt, n);
  return TRUE;
}

gboolean
ct_optimizer_set_state_precision(CtOptimizer *opt, CtPrecision precision, GError **error)
{
  g_return_val_if_fail(opt != NULL, FALSE);
  if (precision != CT_PRECISION_FP32 && precision != CT_PRECISION_BF16) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "optimizer state precision '%s': only fp32 and bf16 (fp16's range is too small "
                "for second moments)", ct_precision_name(precision) ? ct_precision_name(precision) : "?");
    return FALSE;
  }
  if (opt->step > 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "the optimizer has taken %" G_GINT64_FORMAT " steps: set its state precision "
                "before the first", opt->step);
    return FALSE;
  }
  opt->state_bf16 = precision == CT_PRECISION_BF16;
  alloc_state(opt, opt->shard_n);
  return TRUE;
}

CtPrecision
ct_optimizer_state_precision(const CtOptimizer *opt)
{
  return opt->state_bf16 ? CT_PRECISION_BF16 : CT_PRECISION_FP32;
}

void
ct_optimizer_shard(const CtOptimizer *opt, size_t *offset, size_t *n)
{
  *offset = opt->shard_off;
  *n = opt->shard_n;
}

size_t
ct_optimizer_state_bytes(const CtOptimizer *opt)
{
  return (has_buf(opt, 1) ? 2 : 1) * opt->shard_n * (opt->state_bf16 ? 2 : sizeof(float));
}

float *
ct_optimizer_state(CtOptimizer *opt, const char *buffer)
{
  g_return_val_if_fail(opt != NULL, NULL);
  for (int b = 0; b < 2; b++)
    if (buffer_names[opt->kind][b] && g_strcmp0(buffer, buffer_names[opt->kind][b]) == 0)
      return opt->buf[b];
  return NULL;
}

/* ---------------------------------------------------------------- save/load */

/* Buffer B from element OFF on, as stored: its dtype and its bytes. */
static const void *
state_at(const CtOptimizer *opt, int b, size_t off, CtDtype *dtype)
{
  *dtype = opt->state_bf16 ? CT_DTYPE_BF16 : CT_DTYPE_F32;
  return opt->state_bf16 ? (const void *) (opt->hbuf[b] + off) : (const void *) (opt->buf[b] + off);
}

/* Read tensor KEY (N floats of any float dtype) into buffer B at OFF:
 * bfloat16 state takes the nearest bfloat16 (exact for a bfloat16 file). */
static gboolean
read_state(CtOptimizer *opt, const CtSafetensors *st, const char *key, int b, size_t off,
           size_t n, GError **error)
{
  if (!opt->state_bf16)
    return ct_safetensors_read_f32(st, key, opt->buf[b] + off, n, error);
  float *tmp = g_new(float, MAX(n, (size_t) 1));
  gboolean ok = ct_safetensors_read_f32(st, key, tmp, n, error);
  for (size_t i = 0; ok && i < n; i++) /* round to nearest even */
    opt->hbuf[b][off + i] = ct_bf16_from_float(tmp[i]);
  g_free(tmp);
  return ok;
}

gboolean
ct_optimizer_save(CtOptimizer *opt, const char *path, GError **error)
{
  g_return_val_if_fail(opt != NULL && path != NULL, FALSE);
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  gboolean ok = TRUE;
  if (is_sharded(opt)) { /* the range's buffers, flat */
    int64_t n = (int64_t) opt->shard_n;
    for (int b = 0; ok && b < 2; b++)
      if (has_buf(opt, b)) {
        CtDtype dt;
        const void *data = state_at(opt, b, 0, &dt);
        ok = ct_safetensors_writer_add(w, buffer_names[opt->kind][b], dt, 1, &n, data, error);
      }
  }
  for (size_t i = 0; ok && i < opt->n_tensors; i++) {
    if (opt->steps[i] == 0)
      continue; /* zero state: nothing to keep */
    const CtParamInfo *info = ct_model_tensor(opt->model, i);
    for (int b = 0; ok && b < 2 && !is_sharded(opt); b++) {
      if (!has_buf(opt, b))
        continue;
      char *key = g_strconcat(buffer_names[opt->kind][b], ".", info->name, NULL);
      g_ptr_array_add(names, key);
      CtDtype dt;
      const void *data = state_at(opt, b, info->offset, &dt);
      ok = ct_safetensors_writer_add(w, key, dt, info->ndim, info->shape, data, error);
    }
    if (ok) {
      char *key = g_strconcat("step.", info->name, NULL);
      g_ptr_array_add(names, key);
      ok = ct_safetensors_writer_add(w, key, CT_DTYPE_I64, 0, NULL, &opt->steps[i], error);
    }
  }
  if (ok) {
    char num[G_ASCII_DTOSTR_BUF_SIZE];
    ct_safetensors_writer_set_metadata(w, "format", FORMAT_NAME);
    ct_safetensors_writer_set_metadata(w, "kind", kind_names[opt->kind]);
    g_snprintf(num, sizeof num, "%" G_GINT64_FORMAT, opt->step);
    ct_safetensors_writer_set_metadata(w, "step", num);
    if (is_sharded(opt)) {
      g_snprintf(num, sizeof num, "%zu", opt->shard_off);
      ct_safetensors_writer_set_metadata(w, "shard_offset", num);
      g_snprintf(num, sizeof num, "%zu", opt->shard_n);
      ct_safetensors_writer_set_metadata(w, "shard_n", num);
      g_snprintf(num, sizeof num, "%zu", opt->n_params);
      ct_safetensors_writer_set_metadata(w, "n_params", num);
    }
    for (const char *const *h = ct_optimizer_hyper_names(opt); *h; h++) {
      /* %.17g: reads back to the same double */
      g_ascii_formatd(num, sizeof num, "%.17g", ct_optimizer_get(opt, *h));
      ct_safetensors_writer_set_metadata(w, *h, num);
    }
    ok = ct_safetensors_writer_write(w, path, error);
  }
  ct_safetensors_writer_free(w);
  g_ptr_array_unref(names);
  return ok;
}

static gboolean
is_int_dtype(CtDtype d)
{
  return d == CT_DTYPE_I64 || d == CT_DTYPE_I32 || d == CT_DTYPE_I16 || d == CT_DTYPE_I8 ||
         d == CT_DTYPE_U8 || d == CT_DTYPE_U16 || d == CT_DTYPE_U32;
}

/* Index of the model tensor that state tensor KEY belongs to: *SLOT is 0
 * or 1 for a buffer, 2 for the step count.  -1 when KEY is no state of OPT. */
static gssize
state_target(const CtOptimizer *opt, const char *key, int *slot)
{
  const char *prefixes[3] = { buffer_names[opt->kind][0], buffer_names[opt->kind][1], "step" };
  for (int s = 0; s < 3; s++) {
    if (!prefixes[s])
      continue;
    size_t n = strlen(prefixes[s]);
    if (strncmp(key, prefixes[s], n) == 0 && key[n] == '.') {
      *slot = s;
      return (gssize) GPOINTER_TO_SIZE(g_hash_table_lookup(opt->index, key + n + 1)) - 1;
    }
  }
  return -1;
}

static gboolean
meta_size(const CtSafetensors *st, const char *key, size_t *out)
{
  const char *v = ct_safetensors_metadata(st, key);
  guint64 x = 0;
  if (!v || !g_ascii_string_to_unsigned(v, 10, 0, G_MAXSIZE, &x, NULL))
    return FALSE;
  *out = (size_t) x;
  return TRUE;
}

/* A sharded state loads into an optimizer with the same shard only, and a
 * whole one into a whole one; the flat buffers must be (shard_n) floats. */
static gboolean
check_shard(const CtOptimizer *opt, const CtSafetensors *st, GError **error)
{
  const char *path = ct_safetensors_path(st);
  size_t off = 0, n = 0, np = 0;
  gboolean file_sharded = ct_safetensors_metadata(st, "shard_n") != NULL;
  if (file_sharded && (!meta_size(st, "shard_offset", &off) || !meta_size(st, "shard_n", &n) ||
                       !meta_size(st, "n_params", &np))) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: bad shard metadata", path);
    return FALSE;
  }
  if (file_sharded != is_sharded(opt) ||
      (file_sharded && (off != opt->shard_off || n != opt->shard_n || np != opt->n_params))) {
    g_autofree char *have = file_sharded ? g_strdup_printf("parameters [%zu, %zu) of %zu", off,
                                                           off + n, np)
                                         : g_strdup("every parameter");
    g_autofree char *want = is_sharded(opt)
                              ? g_strdup_printf("parameters [%zu, %zu) of %zu", opt->shard_off,
                                                opt->shard_off + opt->shard_n, opt->n_params)
                              : g_strdup("every parameter");
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the state holds %s, this optimizer %s (a sharded state loads into the "
                "same number of ranks only)",
                path, have, want);
    return FALSE;
  }
  for (int b = 0; file_sharded && b < 2; b++) {
    if (!has_buf(opt, b))
      continue;
    const CtTensorInfo *t = ct_safetensors_find(st, buffer_names[opt->kind][b]);
    if (!t || t->ndim != 1 || t->numel != n || !ct_dtype_is_float(t->dtype)) {
      g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
                  "%s: tensor '%s' is missing or not %zu floats", path,
                  buffer_names[opt->kind][b], n);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
ct_optimizer_load(CtOptimizer *opt, const char *path, GError **error)
{
  g_return_val_if_fail(opt != NULL && path != NULL, FALSE);
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return FALSE;
  gboolean ok = FALSE;
  double hp[N_HYPERS];
  int64_t step = 0;
  /* (n_tensors) bit per slot present in the file */
  guint8 *present = g_new0(guint8, opt->n_tensors);

  /* First pass: check everything. */
  const char *format = ct_safetensors_metadata(st, "format");
  const char *kind = ct_safetensors_metadata(st, "kind");
  if (g_strcmp0(format, FORMAT_NAME) != 0 || !kind) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: not an optimizer state (metadata format '%s', kind '%s')", path,
                format ? format : "", kind ? kind : "");
    goto out;
  }
  if (strcmp(kind, kind_names[opt->kind]) != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the state is of optimizer '%s', this optimizer is '%s'", path, kind,
                kind_names[opt->kind]);
    goto out;
  }
  const char *step_s = ct_safetensors_metadata(st, "step");
  gint64 step_v = 0;
  if (!step_s || !g_ascii_string_to_signed(step_s, 10, 0, G_MAXINT64, &step_v, NULL)) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: metadata 'step' is missing or bad ('%s')",
                path, step_s ? step_s : "");
    goto out;
  }
  step = step_v;
  memcpy(hp, opt->hp, sizeof hp);
  for (const char *const *h = ct_optimizer_hyper_names(opt); *h; h++) {
    const char *s = ct_safetensors_metadata(st, *h);
    char *end = NULL;
    errno = 0;
    double v = s ? g_ascii_strtod(s, &end) : NAN;
    int idx = hyper_index(opt, *h);
    gboolean good = s && end != s && *end == '\0' && errno == 0 && isfinite(v) && v >= 0 &&
                    ((idx != H_MOM && idx != H_SQR_MOM) || v < 1);
    if (!good) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s: metadata '%s' is missing or bad ('%s')", path, *h, s ? s : "");
      goto out;
    }
    hp[idx] = v;
  }
  if (!check_shard(opt, st, error))
    goto out;
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
    const CtTensorInfo *t = ct_safetensors_tensor(st, i);
    if (is_sharded(opt) && (g_strcmp0(t->name, buffer_names[opt->kind][0]) == 0 ||
                            g_strcmp0(t->name, buffer_names[opt->kind][1]) == 0))
      continue; /* the flat buffers, checked by check_shard() */
    int slot = -1;
    gssize ti = state_target(opt, t->name, &slot);
    if (ti < 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s: tensor '%s' is no state of a %s optimizer over this model", path,
                  t->name, kind_names[opt->kind]);
      goto out;
    }
    const CtParamInfo *info = ct_model_tensor(opt->model, (size_t) ti);
    gboolean dtype_ok = slot == 2 ? is_int_dtype(t->dtype) : ct_dtype_is_float(t->dtype);
    if (!dtype_ok) {
      g_set_error(error, CT_ERROR, CT_ERROR_DTYPE, "%s: tensor '%s' has dtype %s", path,
                  t->name, ct_dtype_name(t->dtype));
      goto out;
    }
    gboolean shape_ok = slot == 2 ? t->numel == 1 && t->ndim <= 1 : ct_param_shape_matches(info, t);
    if (!shape_ok) {
      g_autofree char *got = ct_shape_string(t->ndim, t->shape);
      g_autofree char *want = slot == 2 ? g_strdup("[]")
                                        : ct_shape_string(info->ndim, info->shape);
      g_set_error(error, CT_ERROR, CT_ERROR_SHAPE, "%s: tensor '%s' has shape %s, expected %s",
                  path, t->name, got, want);
      goto out;
    }
    if (slot == 2) {
      int64_t s = 0;
      if (!ct_safetensors_read_i64(st, t->name, &s, 1, error))
        goto out;
      if (s <= 0) {
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                    "%s: tensor '%s' holds step count %" G_GINT64_FORMAT ", not > 0", path,
                    t->name, s);
        goto out;
      }
    }
    present[ti] |= (guint8) (1u << slot);
  }
  guint8 full = (guint8) (is_sharded(opt) ? 4 : has_buf(opt, 1) ? 7 : 5);
  for (size_t i = 0; i < opt->n_tensors; i++) {
    if (present[i] == 0 || present[i] == full)
      continue;
    const char *name = ct_model_tensor(opt->model, i)->name;
    const char *missing = !(present[i] & 4) ? "step"
                          : !(present[i] & 1) ? buffer_names[opt->kind][0]
                                              : buffer_names[opt->kind][1];
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: tensor '%s.%s' is missing", path,
                missing, name);
    goto out;
  }

  /* Second pass: nothing can fail any more but the copies themselves. */
  for (int b = 0; is_sharded(opt) && b < 2; b++)
    if (has_buf(opt, b) &&
        !read_state(opt, st, buffer_names[opt->kind][b], b, 0, opt->shard_n, error))
      goto out;
  for (size_t i = 0; i < opt->n_tensors; i++) {
    const CtParamInfo *info = ct_model_tensor(opt->model, i);
    if (is_sharded(opt)) {
      opt->steps[i] = 0;
      if (present[i]) {
        g_autofree char *key = g_strconcat("step.", info->name, NULL);
        if (!ct_safetensors_read_i64(st, key, &opt->steps[i], 1, error))
          goto out;
      }
      continue;
    }
    if (!present[i]) {
      opt->steps[i] = 0;
      for (int b = 0; b < 2; b++) {
        if (opt->buf[b])
          memset(opt->buf[b] + info->offset, 0, info->numel * sizeof(float));
        if (opt->hbuf[b])
          memset(opt->hbuf[b] + info->offset, 0, info->numel * sizeof(uint16_t));
      }
      continue;
    }
    for (int b = 0; b < 2; b++) {
      if (!has_buf(opt, b))
        continue;
      g_autofree char *key = g_strconcat(buffer_names[opt->kind][b], ".", info->name, NULL);
      if (!read_state(opt, st, key, b, info->offset, info->numel, error))
        goto out;
    }
    g_autofree char *key = g_strconcat("step.", info->name, NULL);
    if (!ct_safetensors_read_i64(st, key, &opt->steps[i], 1, error))
      goto out;
  }
  memcpy(opt->hp, hp, sizeof hp);
  opt->step = step;
  ok = TRUE;
out:
  g_free(present);
  ct_safetensors_free(st);
  return ok;
}
