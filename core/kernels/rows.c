/* rows.c: selecting one row per sequence (class token, end of text)
 * and L2-normalising feature rows. */
#include "config.h"

#include "kernels/ops.h"
#include "base/profile-private.h"

#include <math.h>
#include <string.h>

void
ct_rows_gather(float *out, const float *in, const int *idx, int B, int T, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  for (int b = 0; b < B; b++)
    memcpy(out + (size_t) b * C, in + ((size_t) b * T + idx[b]) * C, sizeof(float) * C);
  CT_PROF_END();
}

void
ct_rows_copy(float *out, const float *in, int B, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  memcpy(out, in, sizeof(float) * (size_t) B * C);
  CT_PROF_END();
}

void
ct_rows_gather_add(float *out, const float *in, const int *idx, int B, int T, int C)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  for (int b = 0; b < B; b++) {
    float *dst = out + (size_t) b * C;
    const float *src = in + ((size_t) b * T + idx[b]) * C;
    for (int c = 0; c < C; c++)
      dst[c] += src[c];
  }
  CT_PROF_END();
}

void
ct_rows_scatter_add(float *din, const float *dout, const int *idx, int B, int T, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  for (int b = 0; b < B; b++) {
    float *dst = din + ((size_t) b * T + idx[b]) * C;
    const float *src = dout + (size_t) b * C;
    for (int c = 0; c < C; c++)
      dst[c] += src[c];
  }
  CT_PROF_END();
}

void
ct_tokens_argmax(int *idx, const int32_t *tokens, int B, int T)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  for (int b = 0; b < B; b++) {
    const int32_t *row = tokens + (size_t) b * T;
    int best = 0;
    for (int t = 1; t < T; t++)
      if (row[t] > row[best])
        best = t;
    idx[b] = best;
  }
  CT_PROF_END();
}

void
ct_l2norm_forward(float *out, float *norm, const float *in, int N, int E)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  for (int n = 0; n < N; n++) {
    const float *x = in + (size_t) n * E;
    float *y = out + (size_t) n * E;
    double s = 0.0;
    for (int e = 0; e < E; e++)
      s += (double) x[e] * x[e];
    float nr = (float) sqrt(s);
    float inv = 1.0f / nr;
    for (int e = 0; e < E; e++)
      y[e] = x[e] * inv;
    norm[n] = nr;
  }
  CT_PROF_END();
}

void
ct_l2norm_backward(float *din, const float *dout, const float *out, const float *norm,
                   int N, int E)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  /* y = x / |x|  =>  dx = (dy - y (dy . y)) / |x| */
  for (int n = 0; n < N; n++) {
    const float *dy = dout + (size_t) n * E;
    const float *y = out + (size_t) n * E;
    double dot = 0.0;
    for (int e = 0; e < E; e++)
      dot += (double) dy[e] * y[e];
    float inv = 1.0f / norm[n], d = (float) dot;
    float *dx = din + (size_t) n * E;
    for (int e = 0; e < E; e++)
      dx[e] += (dy[e] - y[e] * d) * inv;
  }
  CT_PROF_END();
}
