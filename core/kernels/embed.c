/* embed.c: token + positional embedding, and the ViT patch embedding
 * (im2col for a stride = kernel convolution, then class token and
 * positional embedding). */
#include "config.h"

#include "kernels/ops.h"
#include "base/profile-private.h"

#include <string.h>

void
ct_token_embed_forward(float *out, const int32_t *tokens, const float *wte,
                       const float *wpe, int B, int T, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *e = wte + (size_t) tokens[b * T + t] * C;
      const float *p = wpe + (size_t) t * C;
      float *o = out + ((size_t) b * T + t) * C;
      for (int c = 0; c < C; c++)
        o[c] = e[c] + p[c];
    }
  CT_PROF_END();
}

void
ct_token_embed_backward(float *dwte, float *dwpe, const float *dout,
                        const int32_t *tokens, int B, int T, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *d = dout + ((size_t) b * T + t) * C;
      if (dwte) {
        float *e = dwte + (size_t) tokens[b * T + t] * C;
        for (int c = 0; c < C; c++)
          e[c] += d[c];
      }
      if (dwpe) {
        float *p = dwpe + (size_t) t * C;
        for (int c = 0; c < C; c++)
          p[c] += d[c];
      }
    }
  CT_PROF_END();
}

/* One patch: its row of 3*P*P pixels, columns (c, ky, kx), from image IMG:
 * (3, R, R) at grid cell (gy, gx). */
static void
patch_row(float *row, const float *img, int R, int P, int gy, int gx)
{
  for (int c = 0; c < 3; c++)
    for (int ky = 0; ky < P; ky++) {
      const float *src = img + ((size_t) c * R + gy * P + ky) * R + gx * P;
      memcpy(row + ((size_t) c * P + ky) * P, src, sizeof(float) * P);
    }
}

void
ct_patchify_kept(float *patches, const float *images, const int *keep, int B, int R, int P,
                 int K)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  int G = R / P;
  size_t D = (size_t) 3 * P * P;
  for (int b = 0; b < B; b++)
    for (int j = 0; j < K; j++) {
      int i = keep ? keep[(size_t) b * K + j] : j; /* the patch's grid index */
      patch_row(patches + ((size_t) b * K + j) * D, images + (size_t) b * 3 * R * R, R, P,
                i / G, i % G);
    }
  CT_PROF_END();
}

void
ct_patchify(float *patches, const float *images, int B, int R, int P)
{
  int G = R / P;
  ct_patchify_kept(patches, images, NULL, B, R, P, G * G);
}

void
ct_patch_assemble_kept_forward(float *out, const float *patch_out, const float *cls,
                               const float *pos, const int *keep, int B, int K, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  int T = K + 1;
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t) b * T * C;
    for (int c = 0; c < C; c++)
      o[c] = cls[c] + pos[c];
    for (int j = 0; j < K; j++) {
      int i = keep ? keep[(size_t) b * K + j] : j;
      const float *src = patch_out + ((size_t) b * K + j) * C;
      const float *p = pos + (size_t) (1 + i) * C;
      float *dst = o + (size_t) (1 + j) * C;
      for (int c = 0; c < C; c++)
        dst[c] = src[c] + p[c];
    }
  }
  CT_PROF_END();
}

void
ct_patch_assemble_forward(float *out, const float *patch_out, const float *cls,
                          const float *pos, int B, int GG, int C)
{
  ct_patch_assemble_kept_forward(out, patch_out, cls, pos, NULL, B, GG, C);
}

void
ct_patch_assemble_kept_backward(float *dpatch_out, float *dcls, float *dpos,
                                const float *dout, const int *keep, int B, int K, int C)
{
  CT_PROF_BEGIN(CT_PROF_EMBED);
  int T = K + 1;
  for (int b = 0; b < B; b++) {
    const float *d = dout + (size_t) b * T * C;
    for (int c = 0; c < C; c++) {
      if (dcls)
        dcls[c] += d[c];
      if (dpos)
        dpos[c] += d[c];
    }
    for (int j = 0; j < K; j++) {
      int i = keep ? keep[(size_t) b * K + j] : j;
      const float *src = d + (size_t) (1 + j) * C;
      if (dpatch_out)
        memcpy(dpatch_out + ((size_t) b * K + j) * C, src, sizeof(float) * C);
      if (dpos) {
        float *p = dpos + (size_t) (1 + i) * C;
        for (int c = 0; c < C; c++)
          p[c] += src[c];
      }
    }
  }
  CT_PROF_END();
}

void
ct_patch_assemble_backward(float *dpatch_out, float *dcls, float *dpos,
                           const float *dout, int B, int GG, int C)
{
  ct_patch_assemble_kept_backward(dpatch_out, dcls, dpos, dout, NULL, B, GG, C);
}
