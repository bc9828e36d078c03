/* siglip_parity CASES: ct_siglip_loss against PyTorch's golden cases
 * (tests/torch/gen_siglip_case.py writes them; tests/torch/siglip.sh runs
 * both).  For every case: the loss and the gradients of the image and
 * text features, logit_scale and logit_bias within float32 tolerances of
 * the float64 reference, at chunk sizes 1, 2, 5 and the whole batch, whose
 * results must be bit-identical.  Prints one line per case; exits 1 on the
 * first difference. */
#include "config.h"

#include <cliptrain/cliptrain.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *
read_all(const CtSafetensors *st, const char *name, size_t *n)
{
  const CtTensorInfo *t = ct_safetensors_find(st, name);
  if (!t) {
    fprintf(stderr, "siglip_parity: no tensor %s\n", name);
    exit(1);
  }
  float *buf = g_new(float, MAX(t->numel, 1));
  GError *error = NULL;
  if (!ct_safetensors_read_f32(st, name, buf, t->numel, &error)) {
    fprintf(stderr, "siglip_parity: %s\n", error->message);
    exit(1);
  }
  *n = t->numel;
  return buf;
}

/* Worst |got - want| over N against ATOL + RTOL max |want|. */
static gboolean
close_to(const char *what, int k, const float *got, const float *want, size_t n, double atol,
         double rtol)
{
  double worst = 0, maxw = 0;
  for (size_t i = 0; i < n; i++) {
    worst = fmax(worst, fabs((double) got[i] - want[i]));
    maxw = fmax(maxw, fabs(want[i]));
  }
  double tol = atol + rtol * maxw;
  if (!(worst <= tol)) {
    fprintf(stderr, "siglip_parity: case %d: %s differs by %.3g (tolerance %.3g)\n", k, what,
            worst, tol);
    return FALSE;
  }
  return TRUE;
}

int
main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: siglip_parity CASES.safetensors\n");
    return 2;
  }
  GError *error = NULL;
  CtSafetensors *st = ct_safetensors_open(argv[1], &error);
  if (!st) {
    fprintf(stderr, "siglip_parity: %s\n", error->message);
    return 1;
  }
  const char *cases = ct_safetensors_metadata(st, "cases");
  int ncases = cases ? atoi(cases) : 0, bad = ncases < 1;
  for (int k = 0; k < ncases && !bad; k++) {
    size_t ni, nt, np, n;
    char name[64];
#define READ(field, count) (g_snprintf(name, sizeof name, "case%d." field, k), read_all(st, name, count))
    float *img = READ("img", &ni), *txt = READ("txt", &nt), *params = READ("params", &np);
    float *loss = READ("loss", &n), *d_img = READ("d_img", &n), *d_txt = READ("d_txt", &n);
    float *d_t = READ("d_t", &n), *d_b = READ("d_b", &n);
#undef READ
    const CtTensorInfo *ti = ct_safetensors_find(st, (g_snprintf(name, sizeof name, "case%d.img", k), name));
    int B = (int) ti->shape[0], E = (int) ti->shape[1], G = (int) (nt / E);
    int offset = (int) params[2];
    float *first_i = NULL, *first_t = NULL, first_s = 0, first_b = 0;
    double first_loss = 0;
    static const int chunks[] = { 1, 2, 5, 0 };
    for (size_t c = 0; c < G_N_ELEMENTS(chunks) && !bad; c++) {
      int chunk = chunks[c] ? chunks[c] : B;
      float *logits = g_new(float, (size_t) CT_SIGLIP_CHUNK_ROWS(chunk) * G);
      float *gi = g_new(float, ni), *gt = g_new(float, nt), gs, gb;
      double l = ct_siglip_loss(logits, gi, gt, &gs, &gb, img, txt, offset, params[0], params[1],
                                1.0 / G, B, G, E, chunk);
      float lf = (float) l;
      bad = !close_to("loss", k, &lf, loss, 1, 0, 1e-5) ||
            !close_to("d_img", k, gi, d_img, ni, 1e-6, 1e-4) ||
            !close_to("d_txt", k, gt, d_txt, nt, 1e-6, 1e-4) ||
            !close_to("d_logit_scale", k, &gs, d_t, 1, 1e-6, 1e-4) ||
            !close_to("d_logit_bias", k, &gb, d_b, 1, 1e-6, 1e-4);
      if (!bad && c == 0) {
        first_i = g_memdup2(gi, sizeof(float) * ni);
        first_t = g_memdup2(gt, sizeof(float) * nt);
        first_s = gs, first_b = gb, first_loss = l;
      } else if (!bad && (memcmp(first_i, gi, sizeof(float) * ni) != 0 ||
                          memcmp(first_t, gt, sizeof(float) * nt) != 0 ||
                          memcmp(&first_s, &gs, sizeof gs) != 0 ||
                          memcmp(&first_b, &gb, sizeof gb) != 0 ||
                          memcmp(&first_loss, &l, sizeof l) != 0)) {
        fprintf(stderr, "siglip_parity: case %d: chunk %d differs from chunk 1\n", k, chunk);
        bad = 1;
      }
      g_free(logits), g_free(gi), g_free(gt);
    }
    if (!bad)
      printf("case %d: B %d G %d E %d offset %d: loss %.7g as PyTorch's %.7g\n", k, B, G, E,
             offset, first_loss, loss[0]);
    g_free(first_i), g_free(first_t);
    g_free(img), g_free(txt), g_free(params), g_free(loss), g_free(d_img), g_free(d_txt);
    g_free(d_t), g_free(d_b);
  }
  ct_safetensors_free(st);
  return bad;
}
