/* lowp.c: linear layers and projections at a precision: operands and
 * results rounded as autocast rounds them, products over cblas_sgemm;
 * and precision.h's rounding and packing as kernels of the model's. */
#include "config.h"

#include "kernels/ops.h"
#include "base/profile-private.h"

#include <string.h>

void
ct_linear_forward_p(CtPrecision prec, float *wr, float *out, float *in, const float *w,
                    const float *b, int N, int C, int OC)
{
  if (prec == CT_PRECISION_FP32) { /* timed there */
    ct_linear_forward(out, in, w, b, N, C, OC);
    return;
  }
  CT_PROF_BEGIN(CT_PROF_GEMM);
  ct_round(prec, in, (size_t) N * C);
  ct_round_copy(prec, wr, w, (size_t) OC * C);
  ct_linear_forward(out, in, wr, b, N, C, OC);
  ct_round(prec, out, (size_t) N * OC);
  CT_PROF_END();
}

void
ct_linear_backward_p(CtPrecision prec, float *wr, float *din, float *dw, float *db,
                     float *dout, const float *in, const float *w, int N, int C, int OC)
{
  if (prec == CT_PRECISION_FP32) { /* timed there */
    ct_linear_backward(din, dw, db, dout, in, w, N, C, OC);
    return;
  }
  CT_PROF_BEGIN(CT_PROF_GEMM);
  ct_round(prec, dout, (size_t) N * OC);
  if (din)
    ct_round_copy(prec, wr, w, (size_t) OC * C);
  ct_linear_backward(din, dw, db, dout, in, wr, N, C, OC);
  if (din)
    ct_round(prec, din, (size_t) N * C);
  CT_PROF_END();
}

void
ct_matmul_forward_p(CtPrecision prec, float *wr, float *out, float *in, const float *w, int N,
                    int C, int E)
{
  if (prec == CT_PRECISION_FP32) { /* timed there */
    ct_matmul_forward(out, in, w, N, C, E);
    return;
  }
  CT_PROF_BEGIN(CT_PROF_GEMM);
  ct_round(prec, in, (size_t) N * C);
  ct_round_copy(prec, wr, w, (size_t) C * E);
  ct_matmul_forward(out, in, wr, N, C, E);
  ct_round(prec, out, (size_t) N * E);
  CT_PROF_END();
}

void
ct_matmul_backward_p(CtPrecision prec, float *wr, float *din, float *dw, float *dout,
                     const float *in, const float *w, int N, int C, int E)
{
  if (prec == CT_PRECISION_FP32) { /* timed there */
    ct_matmul_backward(din, dw, dout, in, w, N, C, E);
    return;
  }
  CT_PROF_BEGIN(CT_PROF_GEMM);
  ct_round(prec, dout, (size_t) N * E);
  if (din)
    ct_round_copy(prec, wr, w, (size_t) C * E);
  ct_matmul_backward(din, dw, dout, in, wr, N, C, E);
  if (din)
    ct_round(prec, din, (size_t) N * C);
  CT_PROF_END();
}

void
ct_lowp_round(CtPrecision prec, float *dst, const float *src, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  if (dst == src)
    ct_round(prec, dst, n);
  else
    ct_round_copy(prec, dst, src, n);
  CT_PROF_END();
}

void
ct_lowp_move16(CtPrecision prec, uint16_t *h, float *x, size_t n, int pack)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  if (pack)
    ct_pack16(prec, h, x, n);
  else
    ct_unpack16(prec, x, h, n);
  CT_PROF_END();
}
