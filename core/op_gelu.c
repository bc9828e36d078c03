/* op_gelu.c: QuickGELU, x * sigmoid(1.702 x), and the residual add. */
#include "config.h"

#include "ops.h"

#include <math.h>

#define CT_QGELU_K 1.702f

void
ct_quickgelu_forward(float *out, const float *in, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = in[i];
    out[i] = x / (1.0f + expf(-CT_QGELU_K * x));
  }
}

void
ct_quickgelu_backward(float *din, const float *dout, const float *in, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = in[i];
    float s = 1.0f / (1.0f + expf(-CT_QGELU_K * x));
    din[i] = dout[i] * (s + CT_QGELU_K * x * s * (1.0f - s));
  }
}

void
ct_add_inplace(float *acc, const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    acc[i] += x[i];
}
