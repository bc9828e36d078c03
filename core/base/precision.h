/* precision.h: rounding float32 to bf16 or IEEE fp16, and packing
 * activations into 16 bits.  Not installed.
 *
 * Rounding is to nearest, ties to even, as the hardware conversions do:
 * fp16 overflows to +-inf beyond 65504 (the loss scaler relies on it),
 * keeps subnormals, and NaN stays NaN.  fp16 uses F16C when the CPU has it
 * and an exact scalar path otherwise; both give the same bits. */
#ifndef CT_PRECISION_H
#define CT_PRECISION_H

#include <cliptrain/model.h>

#include <stddef.h>
#include <stdint.h>

/* x: (n) rounded in place to PREC (a no-op for CT_PRECISION_FP32). */
void ct_round(CtPrecision prec, float *x, size_t n);
/* dst: (n) = src: (n) rounded to PREC; dst may equal src. */
void ct_round_copy(CtPrecision prec, float *dst, const float *src, size_t n);
/* dst: (n) 16-bit codes of src: (n) in PREC (bf16 or fp16). */
void ct_pack16(CtPrecision prec, uint16_t *dst, const float *src, size_t n);
/* dst: (n) = the values of the 16-bit codes src: (n) in PREC. */
void ct_unpack16(CtPrecision prec, float *dst, const uint16_t *src, size_t n);

/* Single values, scalar paths (for tests and odd lengths). */
uint16_t ct_fp16_from_float(float f);
float ct_fp16_to_float(uint16_t h);
uint16_t ct_bf16_from_float(float f);
float ct_bf16_to_float(uint16_t h);

/* Whether the F16C path is in use; ct_precision_force_scalar(TRUE) turns
 * it off (tests compare the two). */
int ct_precision_have_f16c(void);
void ct_precision_force_scalar(int on);

#endif
