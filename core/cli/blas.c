/* blas.c: choose OpenBLAS's kernels on purpose.
 *
 * OpenBLAS picks its kernels for the CPU when it is loaded.  Debian 12's
 * OpenBLAS 0.3.21 does not know newer Xeons (Sapphire Rapids, for one) and
 * falls back to its Prescott SSE3 kernels, which run sgemm 5 to 8 times
 * slower than its AVX-512 ones on the same machine.  When the user set no
 * OPENBLAS_CORETYPE, OpenBLAS reports a core without AVX kernels, and the
 * CPU has AVX-512 (or AVX2 and FMA), the program runs itself again with
 * OPENBLAS_CORETYPE=SkylakeX (or Haswell).  The kernel choice is read at
 * load time, so a re-exec is the only way to change it.
 * CT_BLAS_AUTOCORE=0 turns this off; tests/cli/blas-kernels.sh checks that the
 * chosen kernels pass the parity test on the machine at hand. */
#include "config.h"

#include "cli/cli.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static gboolean
core_is_weak(const char *core)
{
  static const char *const weak[] = { "prescott", "core2", "penryn", "dunnington", "nehalem",
                                      "atom", "katmai", "coppermine", "northwood", "banias",
                                      "generic", NULL };
  for (int i = 0; weak[i]; i++)
    if (g_ascii_strcasecmp(core, weak[i]) == 0)
      return TRUE;
  return FALSE;
}

const char *
ct_cli_blas_better_core(void)
{
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return "Haswell";
  return NULL;
}

void
ct_cli_blas_setup(char **argv)
{
  const char *off = g_getenv("CT_BLAS_AUTOCORE");
  if ((off && strcmp(off, "0") == 0) || g_getenv("OPENBLAS_CORETYPE"))
    return;
  const char *core = openblas_get_corename();
  const char *better = ct_cli_blas_better_core();
  if (!core || !better || !core_is_weak(core))
    return;
  g_setenv("OPENBLAS_CORETYPE", better, TRUE);
  execv("/proc/self/exe", argv);
  /* exec failed: carry on with the kernels we have */
  g_unsetenv("OPENBLAS_CORETYPE");
}
