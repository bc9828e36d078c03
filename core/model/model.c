/* model.c: building a CtModel: the parameter layout under OpenAI's names,
 * the activation arena, initialisation, and the forward/backward API. */
#include "config.h"

#include "model/model-private.h"
#include "kernels/ops.h"
#include "base/parallel.h"
#include <cliptrain/rng.h>

#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---------------------------------------------------------------- layout */

typedef struct {
  float **p, **g; /* where to store the parameter and gradient views */
} Slot;

struct CtLayout {
  CtModel *m;
  GArray *slots;     /* of Slot, parallel to m->infos */
  GArray *buf_slots; /* of float **, parallel to m->buf_infos */
};
typedef CtLayout Layout;

void
ct_layout_buffer(CtLayout *lo, float **p, const char *name, int64_t n)
{
  CtParamInfo info = { 0 };
  info.name = g_strdup(name);
  info.offset = lo->m->n_buffers;
  info.ndim = 1;
  info.shape[0] = n;
  info.numel = (size_t) n;
  lo->m->n_buffers += info.numel;
  g_array_append_val(lo->m->buf_infos, info);
  g_array_append_val(lo->buf_slots, p);
}

void
ct_layout_param(CtLayout *lo, float **p, float **g, CtInitSpec init, gboolean decay,
                const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
  CtParamInfo info = { 0 };
  int64_t dims[4] = { d0, d1, d2, d3 };
  info.name = g_strdup(name);
  info.offset = lo->m->n_params;
  info.ndim = ndim;
  info.numel = 1;
  for (int i = 0; i < ndim; i++) {
    info.shape[i] = dims[i];
    info.numel *= (size_t) dims[i];
  }
  info.decay = decay;
  lo->m->n_params += info.numel;
  g_array_append_val(lo->m->infos, info);
  g_array_append_val(lo->m->inits, init);
  Slot s = { p, g };
  g_array_append_val(lo->slots, s);
}

#define add_tensor ct_layout_param

#define NORMAL(std) ((CtInitSpec) { CT_INIT_NORMAL, (std) })
#define UNIFORM(b) ((CtInitSpec) { CT_INIT_UNIFORM, (b) })
#define ZERO ((CtInitSpec) { CT_INIT_ZERO, 0 })
#define ONE ((CtInitSpec) { CT_INIT_ONE, 0 })

/* Inits for a block: OpenAI's initialize_parameters() for the text tower
 * (OPENAI), PyTorch's module defaults for the vision tower, which OpenAI's
 * code leaves at those defaults. */
static void
add_block(Layout *lo, const char *prefix, int i, CtBlock *p, CtBlock *g, int C, int L,
          gboolean openai)
{
  char name[256];
  double c = C;
  CtInitSpec in_w = openai ? NORMAL(pow(c, -0.5)) : UNIFORM(sqrt(6.0 / (c + 3 * c)));
  CtInitSpec out_w = openai ? NORMAL(pow(c, -0.5) * pow(2.0 * L, -0.5)) : UNIFORM(1 / sqrt(c));
  CtInitSpec fc_w = openai ? NORMAL(pow(2.0 * c, -0.5)) : UNIFORM(1 / sqrt(c));
  CtInitSpec proj_w = openai ? NORMAL(pow(c, -0.5) * pow(2.0 * L, -0.5))
                             : UNIFORM(1 / sqrt(4 * c));
#define T(field, init, decay, suffix, ...)                                          \
  do {                                                                               \
    g_snprintf(name, sizeof name, "%sresblocks.%d.%s", prefix, i, suffix);          \
    add_tensor(lo, &p->field, &g->field, init, decay, name, __VA_ARGS__);           \
  } while (0)
  T(in_w, in_w, TRUE, "attn.in_proj_weight", 2, 3 * C, C, 0, 0);
  T(in_b, ZERO, FALSE, "attn.in_proj_bias", 1, 3 * C, 0, 0, 0);
  T(out_w, out_w, TRUE, "attn.out_proj.weight", 2, C, C, 0, 0);
  T(out_b, ZERO, FALSE, "attn.out_proj.bias", 1, C, 0, 0, 0);
  T(ln1_w, ONE, FALSE, "ln_1.weight", 1, C, 0, 0, 0);
  T(ln1_b, ZERO, FALSE, "ln_1.bias", 1, C, 0, 0, 0);
  T(fc_w, fc_w, TRUE, "mlp.c_fc.weight", 2, 4 * C, C, 0, 0);
  T(fc_b, UNIFORM(1 / sqrt(c)), FALSE, "mlp.c_fc.bias", 1, 4 * C, 0, 0, 0);
  T(proj_w, proj_w, TRUE, "mlp.c_proj.weight", 2, C, 4 * C, 0, 0);
  T(proj_b, UNIFORM(1 / sqrt(4 * c)), FALSE, "mlp.c_proj.bias", 1, C, 0, 0, 0);
  T(ln2_w, ONE, FALSE, "ln_2.weight", 1, C, 0, 0, 0);
  T(ln2_b, ZERO, FALSE, "ln_2.bias", 1, C, 0, 0, 0);
#undef T
}

static void build_vit_layout(Layout *lo, CtModel *m);

/* Registers every tensor in OpenAI's state-dict order. */
static void
build_layout(Layout *lo)
{
  CtModel *m = lo->m;
  const CtConfig *c = &m->cfg;
  int E = c->embed_dim;
  int C = c->transformer_width;
  double tw = C;
  int resnet = ct_config_is_resnet(c);
  m->vp.blocks = g_new0(CtBlock, resnet ? 0 : c->vision_layers);
  m->vg.blocks = g_new0(CtBlock, resnet ? 0 : c->vision_layers);
  m->tp.blocks = g_new0(CtBlock, c->transformer_layers);
  m->tg.blocks = g_new0(CtBlock, c->transformer_layers);

  add_tensor(lo, &m->tp.wpe, &m->tg.wpe, NORMAL(0.01), FALSE, "positional_embedding", 2,
             c->context_length, C, 0, 0);
  add_tensor(lo, &m->tp.proj, &m->tg.proj, NORMAL(pow(tw, -0.5)), TRUE, "text_projection", 2, C,
             E, 0, 0);
  add_tensor(lo, &m->logit_scale, &m->dlogit_scale,
             (CtInitSpec) { CT_INIT_CONST, log(1.0 / 0.07) }, FALSE, "logit_scale", 0, 0, 0, 0,
             0);
  if (m->extras & CT_MODEL_LOGIT_BIAS) /* SigLIP's, after logit_scale as in open_clip */
    add_tensor(lo, &m->logit_bias, &m->dlogit_bias, (CtInitSpec) { CT_INIT_CONST, -10.0 },
               FALSE, "logit_bias", 0, 0, 0, 0, 0);
  if (resnet)
    ct_resnet_layout(lo, m);
  else
    build_vit_layout(lo, m);
  for (int i = 0; i < c->transformer_layers; i++)
    add_block(lo, "transformer.", i, &m->tp.blocks[i], &m->tg.blocks[i], C,
              c->transformer_layers, TRUE);
  add_tensor(lo, &m->tp.wte, &m->tg.wte, NORMAL(0.02), FALSE, "token_embedding.weight", 2,
             c->vocab_size, C, 0, 0);
  add_tensor(lo, &m->tp.ln_f_w, &m->tg.ln_f_w, ONE, FALSE, "ln_final.weight", 1, C, 0, 0, 0);
  add_tensor(lo, &m->tp.ln_f_b, &m->tg.ln_f_b, ZERO, FALSE, "ln_final.bias", 1, C, 0, 0, 0);
}

/* The ViT image tower's tensors. */
static void
build_vit_layout(Layout *lo, CtModel *m)
{
  const CtConfig *c = &m->cfg;
  int W = c->vision_width, P = c->vision_patch_size, E = c->embed_dim;
  int G = c->image_resolution / P, GG = G * G;
  double w = W;
  add_tensor(lo, &m->vp.cls, &m->vg.cls, NORMAL(pow(w, -0.5)), FALSE, "visual.class_embedding",
             1, W, 0, 0, 0);
  add_tensor(lo, &m->vp.pos, &m->vg.pos, NORMAL(pow(w, -0.5)), FALSE,
             "visual.positional_embedding", 2, GG + 1, W, 0, 0);
  add_tensor(lo, &m->vp.proj, &m->vg.proj, NORMAL(pow(w, -0.5)), TRUE, "visual.proj", 2, W, E,
             0, 0);
  add_tensor(lo, &m->vp.conv1_w, &m->vg.conv1_w, UNIFORM(1 / sqrt(3.0 * P * P)), TRUE,
             "visual.conv1.weight", 4, W, 3, P, P);
  add_tensor(lo, &m->vp.ln_pre_w, &m->vg.ln_pre_w, ONE, FALSE, "visual.ln_pre.weight", 1, W, 0,
             0, 0);
  add_tensor(lo, &m->vp.ln_pre_b, &m->vg.ln_pre_b, ZERO, FALSE, "visual.ln_pre.bias", 1, W, 0,
             0, 0);
  for (int i = 0; i < c->vision_layers; i++)
    add_block(lo, "visual.transformer.", i, &m->vp.blocks[i], &m->vg.blocks[i], W,
              c->vision_layers, FALSE);
  add_tensor(lo, &m->vp.ln_post_w, &m->vg.ln_post_w, ONE, FALSE, "visual.ln_post.weight", 1, W,
             0, 0, 0);
  add_tensor(lo, &m->vp.ln_post_b, &m->vg.ln_post_b, ZERO, FALSE, "visual.ln_post.bias", 1, W,
             0, 0, 0);
}

/* ---------------------------------------------------------------- arena */

typedef CtArena Arena;

float *
ct_arena_take(CtArena *a, size_t n)
{
  float *p = a->base ? a->base + a->used : NULL;
  a->used += (n + 15) & ~(size_t) 15; /* 64-byte aligned slices */
  return p;
}

#define take ct_arena_take

/* Per-tower buffers of a stack: the segment inputs and the output. */
static void
carve_stack(Arena *a, CtStack *s)
{
  size_t BTC = (size_t) s->max_B * s->T * s->C;
  s->seg_in = take(a, (size_t) s->nseg * BTC);
  s->out = take(a, BTC);
}

/* A store of N slots of BYTES each. */
static void
carve_store(Arena *a, CtActStore *st, int n, size_t bytes)
{
  st->nslots = n;
  st->slot_bytes = bytes;
  st->base = (char *) take(a, (size_t) n * bytes / sizeof(float));
  st->holder = NULL;
}

static void
carve(Arena *a, CtModel *m)
{
  const CtConfig *c = &m->cfg;
  size_t B = m->max_batch, E = c->embed_dim;
  int resnet = ct_config_is_resnet(c);
  size_t W = resnet ? 0 : c->vision_width, P = c->vision_patch_size;
  size_t G = P ? c->image_resolution / P : 0, GG = G * G, Tv = resnet ? 0 : GG + 1;
  size_t C = c->transformer_width, Tt = c->context_length;
  int half = m->prec != CT_PRECISION_FP32;
  CtVisionActs *va = &m->va;
  CtTextActs *ta = &m->ta;

  if (resnet) /* the ResNet's own activations; features in va as for a ViT */
    ct_resnet_carve(a, m);
  va->patches = take(a, B * GG * 3 * P * P);
  va->patch_out = take(a, B * GG * W);
  va->x0 = take(a, B * Tv * W);
  va->ln_pre_mean = take(a, B * Tv);
  va->ln_pre_rstd = take(a, B * Tv);
  carve_stack(a, &va->stack);
  va->rows = take(a, B * W);
  va->ln_post = take(a, B * W);
  va->ln_post_mean = take(a, B);
  va->ln_post_rstd = take(a, B);
  va->feat = take(a, B * E);
  va->featn = take(a, B * E);
  va->norm = take(a, B);

  carve_stack(a, &ta->stack);
  ta->rows = take(a, B * C);
  ta->ln_f = take(a, B * C);
  ta->ln_f_mean = take(a, B);
  ta->ln_f_rstd = take(a, B);
  ta->feat = take(a, B * E);
  ta->featn = take(a, B * E);
  ta->norm = take(a, B);

  /* saved activations: a store per tower, or one shared store of one
   * segment when checkpointing */
  CtStack *vs = &va->stack, *ts = &ta->stack;
  size_t vb = ct_stack_slot_bytes(vs, half), tb = ct_stack_slot_bytes(ts, half);
  if (m->nchunks == 0) {
    carve_store(a, &m->stores[0], vs->L, vb);
    carve_store(a, &m->stores[1], ts->L, tb);
    vs->store = &m->stores[0];
    ts->store = &m->stores[1];
  } else {
    carve_store(a, &m->stores[0], MAX(vs->seglen, ts->seglen), MAX(vb, tb));
    m->stores[1] = (CtActStore) { 0 };
    vs->store = ts->store = &m->stores[0];
  }

  size_t Cm = MAX(W, C), Tm = MAX(Tv, Tt);
  size_t BTC = B * MAX(Tv * W, Tt * C);
  CtScratch *sc = &m->sc;
  sc->dx = take(a, BTC);
  sc->dA = take(a, BTC);
  sc->dqkv = take(a, 3 * BTC);
  sc->dfc = take(a, 4 * BTC);
  sc->datt = take(a, CT_MAX_THREADS * Tm * Tm); /* one (T, T) a pool thread */
  sc->dfeat = take(a, B * E);
  sc->drow = take(a, B * Cm);
  sc->dln = take(a, B * Cm);
  sc->gelu = take(a, 4 * BTC);
  sc->slope = take(a, 4 * BTC);
  sc->ln = half ? NULL : take(a, BTC);
  if (!half) {
    sc->wr = sc->dr = sc->xa = sc->xb = NULL;
    sc->work = (CtLayerActs) { 0 };
    return;
  }
  size_t wmax = MAX(MAX(4 * W * W, 4 * C * C), MAX(W * 3 * P * P, Cm * E));
  size_t natt = B * MAX((size_t) vs->H * Tv * Tv, (size_t) ts->H * Tt * Tt);
  sc->wr = take(a, wmax);
  sc->dr = take(a, BTC);
  sc->xa = take(a, BTC);
  sc->xb = take(a, BTC);
  CtLayerActs *w = &sc->work;
  w->ln1 = take(a, BTC);
  w->qkv = take(a, 3 * BTC);
  w->att = take(a, natt);
  w->atty = take(a, BTC);
  w->xmid = take(a, BTC);
  w->ln2 = take(a, BTC);
  w->fc = take(a, 4 * BTC);
}

/* Stacks' shapes and segments for the current precision and chunks. */
static void
setup_stacks(CtModel *m)
{
  const CtConfig *c = &m->cfg;
  int resnet = ct_config_is_resnet(c);
  int G = resnet ? 0 : c->image_resolution / c->vision_patch_size;
  m->va.stack = (CtStack) { .L = resnet ? 0 : c->vision_layers, .T = G * G + 1,
                            .C = resnet ? 1 : c->vision_width,
                            .H = c->vision_heads, .causal = 0, .max_B = m->max_batch,
                            .p = m->vp.blocks, .g = m->vg.blocks, .owner = m };
  m->ta.stack = (CtStack) { .L = c->transformer_layers, .T = c->context_length,
                            .C = c->transformer_width, .H = c->transformer_heads, .causal = 1,
                            .max_B = m->max_batch, .p = m->tp.blocks, .g = m->tg.blocks,
                            .owner = m };
  CtStack *st[2] = { &m->va.stack, &m->ta.stack };
  for (int i = 0; i < 2; i++) {
    CtStack *s = st[i];
    if (s->L == 0) { /* a ResNet's: no transformer blocks */
      s->seglen = 1;
      s->nseg = 0;
      continue;
    }
    int n = m->nchunks == 0 ? 1 : MIN(m->nchunks, s->L);
    s->seglen = (s->L + n - 1) / n;
    s->nseg = (s->L + s->seglen - 1) / s->seglen;
  }
}

/* (Re)allocate the activation arena for the model's batch, precision and
 * checkpointing. */
static gboolean
alloc_arena(CtModel *m, GError **error)
{
  g_free(m->arena);
  m->arena = NULL;
  setup_stacks(m);
  Arena a = { NULL, 0 };
  carve(&a, m);
  m->arena_floats = a.used;
  m->arena = g_try_new0(float, a.used);
  if (!m->arena) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                "out of memory for %zu MiB of activations at batch %d",
                a.used * sizeof(float) >> 20, m->max_batch);
    return FALSE;
  }
  a = (Arena) { m->arena, 0 };
  carve(&a, m);
  return TRUE;
}

/* ---------------------------------------------------------------- new/free */

/* Running means 0, running variances 1, as nn.BatchNorm2d starts. */
static void
reset_buffers(CtModel *m)
{
  for (guint i = 0; i < m->buf_infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->buf_infos, CtParamInfo, i);
    float v = g_str_has_suffix(info->name, "running_var") ? 1.0f : 0.0f;
    for (size_t k = 0; k < info->numel; k++)
      m->buffers[info->offset + k] = v;
  }
}

/* The gradient buffer is a private anonymous mapping of its own, page
 * aligned, so that ct_model_release_grads() can hand whole pages back. */
static size_t
grads_bytes(size_t n_params)
{
  return MAX(n_params, (size_t) 1) * sizeof(float);
}

static float *
alloc_grads(size_t n_params)
{
  void *p = mmap(NULL, grads_bytes(n_params), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p; /* zero-filled */
}

CtModel *
ct_model_new(const CtConfig *cfg, int max_batch, GError **error)
{
  return ct_model_new_extras(cfg, max_batch, 0, error);
}

CtModel *
ct_model_new_extras(const CtConfig *cfg, int max_batch, uint32_t extras, GError **error)
{
  g_return_val_if_fail(cfg != NULL, NULL);
  if (extras & ~(uint32_t) CT_MODEL_LOGIT_BIAS) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "unknown model extras 0x%x", extras);
    return NULL;
  }
  CtConfig c = *cfg;
  if (!ct_config_validate(&c, error))
    return NULL;
  if (max_batch < 1 || max_batch > (1 << 20)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "batch size %d is out of range", max_batch);
    return NULL;
  }
  CtModel *m = g_new0(CtModel, 1);
  m->cfg = c;
  m->extras = extras;
  m->max_batch = max_batch;
  m->infos = g_array_new(FALSE, TRUE, sizeof(CtParamInfo));
  m->inits = g_array_new(FALSE, TRUE, sizeof(CtInitSpec));
  m->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  m->buf_infos = g_array_new(FALSE, TRUE, sizeof(CtParamInfo));
  if (ct_config_is_resnet(&m->cfg))
    ct_resnet_setup(m);

  Layout lo = { m, g_array_new(FALSE, TRUE, sizeof(Slot)), g_array_new(FALSE, TRUE, sizeof(float **)) };
  build_layout(&lo);
  m->params = g_try_new0(float, m->n_params);
  m->grads = alloc_grads(m->n_params);
  m->buffers = g_try_new0(float, MAX(m->n_buffers, 1));
  if (!m->params || !m->grads || !m->buffers) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                "out of memory for %zu parameters and their gradients", m->n_params);
    g_array_free(lo.slots, TRUE);
    g_array_free(lo.buf_slots, TRUE);
    ct_model_free(m);
    return NULL;
  }
  for (guint i = 0; i < m->buf_infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->buf_infos, CtParamInfo, i);
    *g_array_index(lo.buf_slots, float **, i) = m->buffers + info->offset;
  }
  g_array_free(lo.buf_slots, TRUE);
  reset_buffers(m);
  m->training = TRUE;
  for (guint i = 0; i < m->infos->len; i++) {
    CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    Slot *s = &g_array_index(lo.slots, Slot, i);
    *s->p = m->params + info->offset;
    *s->g = m->grads + info->offset;
    g_hash_table_insert(m->by_name, (gpointer) info->name, GUINT_TO_POINTER(i + 1));
  }
  g_array_free(lo.slots, TRUE);

  m->prec = CT_PRECISION_FP32;
  m->loss_scale = 1.0f;
  m->trim_text = TRUE;
  m->prune_readout = TRUE;
  if (!alloc_arena(m, error)) {
    ct_model_free(m);
    return NULL;
  }
  m->va.cls_idx = g_new0(int, max_batch);
  m->va.K = ct_config_is_resnet(&c) ? 0 : (c.image_resolution / c.vision_patch_size) *
                                           (c.image_resolution / c.vision_patch_size);
  /* patch dropout's kept indices: allocated here, so no step allocates */
  m->pdrop_keep = ct_config_is_resnet(&c) ? NULL : g_new0(int, (size_t) max_batch * m->va.K);
  m->ta.eot = g_new0(int, max_batch);
  m->ta.tokens = g_new0(int32_t, (size_t) max_batch * c.context_length);
  return m;
}

void
ct_model_free(CtModel *m)
{
  if (!m)
    return;
  if (m->infos)
    for (guint i = 0; i < m->infos->len; i++)
      g_free((char *) g_array_index(m->infos, CtParamInfo, i).name);
  if (m->buf_infos)
    for (guint i = 0; i < m->buf_infos->len; i++)
      g_free((char *) g_array_index(m->buf_infos, CtParamInfo, i).name);
  g_array_free(m->infos, TRUE);
  if (m->buf_infos)
    g_array_free(m->buf_infos, TRUE);
  g_free(m->buffers);
  ct_resnet_cleanup(m);
  g_array_free(m->inits, TRUE);
  g_hash_table_destroy(m->by_name);
  g_free(m->vp.blocks);
  g_free(m->vg.blocks);
  g_free(m->tp.blocks);
  g_free(m->tg.blocks);
  g_free(m->params);
  if (m->grads)
    munmap(m->grads, grads_bytes(m->n_params));
  g_free(m->block_grads);
  g_free(m->arena);
  g_free(m->va.cls_idx);
  g_free(m->pdrop_keep);
  g_free(m->ta.eot);
  g_free(m->ta.tokens);
  g_free(m);
}

/* ---------------------------------------------------------------- access */

const CtConfig *
ct_model_config(const CtModel *m)
{
  return &m->cfg;
}

int
ct_model_max_batch(const CtModel *m)
{
  return m->max_batch;
}

size_t
ct_model_n_params(const CtModel *m)
{
  return m->n_params;
}

float *
ct_model_params(CtModel *m)
{
  return m->params;
}

float *
ct_model_grads(CtModel *m)
{
  return m->grads;
}

/* Cleared on the pool (ct_zero): vitb32's 605 MB of gradients took
 * about 50 ms a step on one thread. */
void
ct_model_zero_grad(CtModel *m)
{
  ct_zero(m->grads, m->n_params);
  m->grads_released = FALSE; /* every page written: resident again */
}

void
ct_model_release_grads(CtModel *m, size_t offset, size_t n)
{
  g_return_if_fail(offset <= m->n_params && n <= m->n_params - offset);
  long page = sysconf(_SC_PAGESIZE);
  char *lo = (char *) (m->grads + offset), *hi = (char *) (m->grads + offset + n);
  /* the whole pages inside the range go back to the system (they read as
   * zeros, and cost nothing until written again); the partial pages at
   * its ends may hold other tensors' gradients, so they are cleared */
  char *plo = (char *) (((uintptr_t) lo + page - 1) & ~(uintptr_t) (page - 1));
  char *phi = (char *) ((uintptr_t) hi & ~(uintptr_t) (page - 1));
  if (phi > plo && madvise(plo, (size_t) (phi - plo), MADV_DONTNEED) == 0) {
    m->grads_released = TRUE;
    memset(lo, 0, (size_t) (plo - lo));
    memset(phi, 0, (size_t) (hi - phi));
  } else {
    memset(lo, 0, (size_t) (hi - lo));
  }
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* The kernel clears each page it populates: the range is shared out
 * among the pool's threads in 1 MiB pieces. */
#define POPULATE_CHUNK ((size_t) 1 << 20)

static void
populate_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  char *const *r = ctx; /* page-aligned [lo, hi) */
  char *lo = r[0] + begin * POPULATE_CHUNK;
  char *hi = MIN(r[0] + end * POPULATE_CHUNK, r[1]);
  madvise(lo, (size_t) (hi - lo), MADV_POPULATE_WRITE); /* best effort */
}

/* Populates the released pages of [G, G + N) on the pool. */
static void
prepare_grads(const CtModel *m, float *g, size_t n)
{
  if (!m->grads_released || n == 0)
    return;
  long page = sysconf(_SC_PAGESIZE);
  char *r[2] = { (char *) ((uintptr_t) g & ~(uintptr_t) (page - 1)), (char *) (g + n) };
  size_t chunks = ((size_t) (r[1] - r[0]) + POPULATE_CHUNK - 1) / POPULATE_CHUNK;
  ct_parallel_for(chunks, 1, populate_range, r);
}

float *
ct_model_block_grads(CtModel *m, float *g, size_t n)
{
  if (!m->block_grads) {
    prepare_grads(m, g, n);
    return g;
  }
  g_assert(n <= m->block_grads_n);
  ct_zero(m->block_grads, n);
  return m->block_grads;
}

void
ct_model_block_done(CtModel *m, const float *g, float *at, size_t n)
{
  if (!m->hook)
    return;
  m->ready_grads = at;
  m->hook(m->hook_data, (size_t) (g - m->grads), n);
  m->ready_grads = NULL;
}

float *
ct_model_ready_grads(CtModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  return m->ready_grads;
}

/* The most gradients of any residual block: a transformer block of either
 * tower, a ResNet Bottleneck, or the ResNet's attention pool. */
static size_t
largest_block(const CtModel *m)
{
  size_t most = 0;
  const CtStack *st[2] = { &m->va.stack, &m->ta.stack };
  for (int t = 0; t < 2; t++)
    for (int i = 0; st[t]->g && i < st[t]->L; i++)
      most = MAX(most, ct_block_grads_n(&st[t]->g[i], st[t]->C));
  for (int i = 0; i < m->rn.nblocks; i++)
    most = MAX(most, ct_bottleneck_grads_n(&m->rn.blocks[i]));
  if (m->rn.nblocks > 0)
    most = MAX(most, ct_resnet_pool_grads_n(&m->rn));
  return most;
}

gboolean
ct_model_set_block_grads_scratch(CtModel *m, gboolean on, GError **error)
{
  g_return_val_if_fail(m != NULL, FALSE);
  if (!on) {
    g_clear_pointer(&m->block_grads, g_free);
    m->block_grads_n = 0;
    return TRUE;
  }
  if (m->block_grads)
    return TRUE;
  size_t n = largest_block(m);
  if (n == 0)
    return TRUE; /* no residual blocks: nothing to place */
  m->block_grads = g_try_new(float, n);
  if (!m->block_grads) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                "out of memory for one block's %zu gradients (the block scratch)", n);
    return FALSE;
  }
  m->block_grads_n = n;
  return TRUE;
}

size_t
ct_model_n_tensors(const CtModel *m)
{
  return m->infos->len;
}

const CtParamInfo *
ct_model_tensor(const CtModel *m, size_t i)
{
  g_return_val_if_fail(i < m->infos->len, NULL);
  return &g_array_index(m->infos, CtParamInfo, i);
}

const CtParamInfo *
ct_model_find(const CtModel *m, const char *name)
{
  guint i = GPOINTER_TO_UINT(g_hash_table_lookup(m->by_name, name));
  return i ? &g_array_index(m->infos, CtParamInfo, i - 1) : NULL;
}

void
ct_model_set_backward_hook(CtModel *m, CtBackwardHook hook, void *data)
{
  m->hook = hook;
  m->hook_data = data;
}

void
ct_model_set_training(CtModel *m, gboolean training)
{
  g_return_if_fail(m != NULL);
  m->training = training ? TRUE : FALSE;
}

gboolean
ct_model_training(const CtModel *m)
{
  return m->training;
}

size_t
ct_model_n_buffer_floats(const CtModel *m)
{
  return m ? m->n_buffers : 0;
}

float *
ct_model_buffers(CtModel *m)
{
  return m && m->n_buffers ? m->buffers : NULL;
}

size_t
ct_model_n_buffer_tensors(const CtModel *m)
{
  return m->buf_infos->len;
}

const CtParamInfo *
ct_model_buffer_tensor(const CtModel *m, size_t i)
{
  g_return_val_if_fail(i < m->buf_infos->len, NULL);
  return &g_array_index(m->buf_infos, CtParamInfo, i);
}

const CtParamInfo *
ct_model_find_buffer(const CtModel *m, const char *name)
{
  for (guint i = 0; i < m->buf_infos->len; i++)
    if (g_str_equal(g_array_index(m->buf_infos, CtParamInfo, i).name, name))
      return &g_array_index(m->buf_infos, CtParamInfo, i);
  return NULL;
}

float *
ct_model_logit_scale(CtModel *m)
{
  return m->logit_scale;
}

float *
ct_model_logit_bias(CtModel *m)
{
  return m->logit_bias;
}

uint32_t
ct_model_extras(const CtModel *m)
{
  return m->extras;
}

const float *
ct_model_image_features(const CtModel *m)
{
  return m->va.featn;
}

const float *
ct_model_text_features(const CtModel *m)
{
  return m->ta.featn;
}

/* ---------------------------------------------------------------- init */

void
ct_model_init_weights(CtModel *m, uint64_t seed)
{
  reset_buffers(m);
  for (guint i = 0; i < m->infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    const CtInitSpec *init = &g_array_index(m->inits, CtInitSpec, i);
    float *p = m->params + info->offset;
    CtRng rng;
    ct_rng_init_stream(&rng, seed, i);
    switch (init->kind) {
    case CT_INIT_ZERO:
      memset(p, 0, sizeof(float) * info->numel);
      break;
    case CT_INIT_ONE:
    case CT_INIT_CONST:
      for (size_t k = 0; k < info->numel; k++)
        p[k] = init->kind == CT_INIT_ONE ? 1.0f : (float) init->a;
      break;
    case CT_INIT_NORMAL:
      ct_rng_normal_fill(&rng, p, info->numel, init->a);
      break;
    case CT_INIT_UNIFORM:
      ct_rng_uniform_fill(&rng, p, info->numel, -init->a, init->a);
      break;
    }
  }
}

/* ---------------------------------------------------------------- passes */

static gboolean
check_batch(const CtModel *m, int batch, GError **error)
{
  if (batch < 1 || batch > m->max_batch) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "batch of %d samples is out of range: this model holds 1 to %d", batch,
                m->max_batch);
    return FALSE;
  }
  return TRUE;
}

gboolean
ct_model_encode_image(CtModel *m, const float *images, int batch, GError **error)
{
  g_return_val_if_fail(m != NULL && images != NULL, FALSE);
  if (!check_batch(m, batch, error))
    return FALSE;
  if (ct_config_is_resnet(&m->cfg))
    ct_resnet_forward(m, images, batch);
  else
    ct_vision_forward(m, images, batch);
  return TRUE;
}

gboolean
ct_model_encode_text(CtModel *m, const int32_t *tokens, int batch, GError **error)
{
  g_return_val_if_fail(m != NULL && tokens != NULL, FALSE);
  if (!check_batch(m, batch, error))
    return FALSE;
  int T = m->cfg.context_length, V = m->cfg.vocab_size;
  for (size_t i = 0; i < (size_t) batch * T; i++)
    if (tokens[i] < 0 || tokens[i] >= V) {
      g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                  "token id %d at row %zu, position %zu is outside the vocabulary [0, %d)",
                  tokens[i], i / T, i % T, V);
      return FALSE;
    }
  ct_text_forward(m, tokens, batch);
  return TRUE;
}

gboolean
ct_model_forward(CtModel *m, const float *images, const int32_t *tokens, int batch,
                 GError **error)
{
  return ct_model_encode_text(m, tokens, batch, error) &&
         ct_model_encode_image(m, images, batch, error);
}

void
ct_model_backward(CtModel *m, const float *d_image_features, const float *d_text_features)
{
  if (d_image_features && ct_config_is_resnet(&m->cfg))
    ct_resnet_backward(m, d_image_features);
  else if (d_image_features)
    ct_vision_backward(m, d_image_features);
  if (d_text_features)
    ct_text_backward(m, d_text_features);
}

/* ---------------------------------------------------------------- memory */

static const char *const precision_names[] = { "fp32", "bf16", "fp16" };

const char *
ct_precision_name(CtPrecision p)
{
  return (unsigned) p < G_N_ELEMENTS(precision_names) ? precision_names[p] : NULL;
}

gboolean
ct_precision_from_name(const char *name, CtPrecision *p, GError **error)
{
  for (guint i = 0; name && i < G_N_ELEMENTS(precision_names); i++)
    if (g_str_equal(name, precision_names[i])) {
      *p = (CtPrecision) i;
      return TRUE;
    }
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
              "unknown precision '%s': expected fp32, bf16 or fp16", name ? name : "");
  return FALSE;
}

gboolean
ct_model_set_memory(CtModel *m, CtPrecision prec, int nchunks, GError **error)
{
  g_return_val_if_fail(m != NULL, FALSE);
  if (!ct_precision_name(prec) || nchunks < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "invalid memory plan: precision %d, checkpoint_nchunks %d", (int) prec, nchunks);
    return FALSE;
  }
  if (m->prec == prec && m->nchunks == nchunks && m->arena)
    return TRUE;
  CtPrecision old_prec = m->prec;
  int old_n = m->nchunks;
  m->prec = prec;
  m->nchunks = nchunks;
  if (alloc_arena(m, error))
    return TRUE;
  m->prec = old_prec;
  m->nchunks = old_n;
  alloc_arena(m, NULL);
  return FALSE;
}

CtPrecision
ct_model_precision(const CtModel *m)
{
  return m->prec;
}

int
ct_model_checkpoint_nchunks(const CtModel *m)
{
  return m->nchunks;
}

size_t
ct_model_activation_bytes(const CtModel *m)
{
  return m->arena_floats * sizeof(float);
}

size_t
ct_config_activation_bytes(const CtConfig *cfg, int batch, CtPrecision prec, int nchunks)
{
  /* a model without parameters, carved but not allocated */
  CtModel m = { 0 };
  m.cfg = *cfg;
  if (!ct_config_validate(&m.cfg, NULL) || batch < 1)
    return 0;
  m.max_batch = batch;
  m.prec = prec;
  m.nchunks = MAX(nchunks, 0);
  if (ct_config_is_resnet(&m.cfg))
    ct_resnet_setup(&m);
  setup_stacks(&m);
  Arena a = { NULL, 0 };
  carve(&a, &m);
  ct_resnet_cleanup(&m);
  return a.used * sizeof(float);
}

void
ct_model_set_loss_scale(CtModel *m, float scale)
{
  m->loss_scale = scale;
}

float
ct_model_loss_scale(const CtModel *m)
{
  return m->loss_scale;
}

void
ct_model_set_trim_text(CtModel *m, gboolean on)
{
  m->trim_text = on;
}

void
ct_model_set_prune_readout(CtModel *m, gboolean on)
{
  m->prune_readout = on;
}
