/* adamw.c: AdamW over the flat parameter buffer, one pass per tensor. */
#include "config.h"

#include <cliptrain/optim.h>

#include <math.h>

struct CtAdamW {
  CtAdamWParams hp;
  size_t n;
  int64_t t;
  float *m; /* (n) first moment */
  float *v; /* (n) second moment */
};

CtAdamW *
ct_adamw_new(size_t n, const CtAdamWParams *params)
{
  g_return_val_if_fail(params != NULL, NULL);
  CtAdamW *opt = g_new0(CtAdamW, 1);
  opt->hp = *params;
  opt->n = n;
  opt->m = g_new0(float, n);
  opt->v = g_new0(float, n);
  return opt;
}

void
ct_adamw_free(CtAdamW *opt)
{
  if (!opt)
    return;
  g_free(opt->m);
  g_free(opt->v);
  g_free(opt);
}

CtAdamWParams *
ct_adamw_params(CtAdamW *opt)
{
  return &opt->hp;
}

float *
ct_adamw_exp_avg(CtAdamW *opt)
{
  return opt->m;
}

float *
ct_adamw_exp_avg_sq(CtAdamW *opt)
{
  return opt->v;
}

int64_t
ct_adamw_step_count(const CtAdamW *opt)
{
  return opt->t;
}

void
ct_adamw_set_step_count(CtAdamW *opt, int64_t steps)
{
  opt->t = steps;
}

void
ct_adamw_step(CtAdamW *opt, CtModel *model)
{
  g_return_if_fail(opt->n == ct_model_n_params(model));
  float *p = ct_model_params(model);
  const float *g = ct_model_grads(model);
  opt->t++;
  const CtAdamWParams *hp = &opt->hp;
  float b1 = hp->beta1, b2 = hp->beta2;
  float bc1 = 1.0f - (float) pow(b1, (double) opt->t);
  float bc2 = 1.0f - (float) pow(b2, (double) opt->t);
  float step = hp->lr / bc1;
  float rbc2 = 1.0f / sqrtf(bc2);
  size_t nt = ct_model_n_tensors(model);
  for (size_t ti = 0; ti < nt; ti++) {
    const CtParamInfo *info = ct_model_tensor(model, ti);
    float decay = info->decay ? 1.0f - hp->lr * hp->weight_decay : 1.0f;
    size_t end = info->offset + info->numel;
    float *m = opt->m, *v = opt->v;
    for (size_t i = info->offset; i < end; i++) {
      float gi = g[i];
      m[i] = b1 * m[i] + (1.0f - b1) * gi;
      v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
      p[i] = p[i] * decay - step * m[i] / (sqrtf(v[i]) * rbc2 + hp->eps);
    }
  }
}
