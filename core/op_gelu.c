/* op_gelu.c: QuickGELU, x * sigmoid(1.702 x), and the residual add. */
#include "config.h"

#include "ops.h"
#include "parallel.h"

#include <math.h>

#define CT_QGELU_K 1.702f

typedef struct {
  float *out;
  const float *in, *dout;
} EwJob;

static void
gelu_forward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const EwJob *j = ctx;
  for (size_t i = begin; i < end; i++) {
    float x = j->in[i];
    j->out[i] = x / (1.0f + expf(-CT_QGELU_K * x));
  }
}

void
ct_quickgelu_forward(float *out, const float *in, size_t n)
{
  EwJob j = { .out = out, .in = in };
  ct_parallel_for(n, 16384, gelu_forward_range, &j);
}

static void
gelu_backward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const EwJob *j = ctx;
  for (size_t i = begin; i < end; i++) {
    float x = j->in[i];
    float s = 1.0f / (1.0f + expf(-CT_QGELU_K * x));
    j->out[i] = j->dout[i] * (s + CT_QGELU_K * x * s * (1.0f - s));
  }
}

void
ct_quickgelu_backward(float *din, const float *dout, const float *in, size_t n)
{
  EwJob j = { .out = din, .in = in, .dout = dout };
  ct_parallel_for(n, 16384, gelu_backward_range, &j);
}

static void
add_range(void *ctx, size_t begin, size_t end, int thread)
{
  const EwJob *j = ctx;
  for (size_t i = begin; i < end; i++)
    j->out[i] += j->in[i];
}

void
ct_add_inplace(float *acc, const float *x, size_t n)
{
  EwJob j = { .out = acc, .in = x };
  ct_parallel_for(n, 65536, add_range, &j);
}
