/* st-diff: how far apart are the float tensors of two safetensors files?
 * For the MPI tests, which compare a run on N ranks with one process.
 *
 *   tests/unit/st-diff A B [PREFIX] [TOL]
 *
 * Compares every float tensor of A whose name starts with PREFIX (default
 * "": all) with the tensor of the same name in B, and prints the largest
 * difference relative to the tensor's largest magnitude (at least 1).
 * Exits 1 when a tensor is missing, has another size, or differs by more
 * than TOL (default 1e-5); 2 on bad usage. */
#include "config.h"

#include <cliptrain/cliptrain.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

int
main(int argc, char **argv)
{
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: st-diff A B [PREFIX] [TOL]\n");
    return 2;
  }
  const char *prefix = argc > 3 ? argv[3] : "";
  double tol = argc > 4 ? g_ascii_strtod(argv[4], NULL) : 1e-5;
  GError *e = NULL;
  CtSafetensors *a = ct_safetensors_open(argv[1], &e);
  CtSafetensors *b = a ? ct_safetensors_open(argv[2], &e) : NULL;
  if (!b) {
    fprintf(stderr, "st-diff: %s\n", e->message);
    return 1;
  }
  int rc = 0, n = 0;
  double worst = 0;
  const char *worst_name = "";
  for (size_t i = 0; i < ct_safetensors_n_tensors(a); i++) {
    const CtTensorInfo *ta = ct_safetensors_tensor(a, i);
    if (!g_str_has_prefix(ta->name, prefix) || !ct_dtype_is_float(ta->dtype))
      continue;
    const CtTensorInfo *tb = ct_safetensors_find(b, ta->name);
    if (!tb || tb->numel != ta->numel) {
      printf("%s: %s in %s\n", ta->name, tb ? "another size" : "missing", argv[2]);
      rc = 1;
      continue;
    }
    float *x = g_new(float, MAX(ta->numel, 1)), *y = g_new(float, MAX(ta->numel, 1));
    if (!ct_safetensors_read_f32(a, ta->name, x, ta->numel, &e) ||
        !ct_safetensors_read_f32(b, ta->name, y, ta->numel, &e)) {
      fprintf(stderr, "st-diff: %s\n", e->message);
      return 1;
    }
    double mx = 1, d = 0;
    for (size_t k = 0; k < ta->numel; k++) {
      mx = fmax(mx, fabs(x[k]));
      d = fmax(d, fabs((double) x[k] - y[k]));
      if (isnan(x[k]) != isnan(y[k]))
        d = INFINITY;
    }
    if (d / mx > worst) {
      worst = d / mx;
      worst_name = ta->name;
    }
    n++;
    g_free(x);
    g_free(y);
  }
  printf("%d tensors; largest relative difference %.3g (%s)\n", n, worst, worst_name);
  if (worst > tol || n == 0)
    rc = 1;
  ct_safetensors_free(a);
  ct_safetensors_free(b);
  return rc;
}
