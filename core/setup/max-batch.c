/* max-batch.c: predicting a fit's memory from its recipe, and searching
 * for the largest batch that fits a budget. */
#include "config.h"

#include "setup/max-batch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

size_t
ct_rss_now(void)
{
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
      resident = 0;
    fclose(f);
  }
  return (size_t) resident * (size_t) sysconf(_SC_PAGESIZE);
}

size_t
ct_rss_peak(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (size_t) ru.ru_maxrss * 1024; /* KiB on Linux */
}

static size_t
mem_available(void)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
    return 0;
  const char *p = strstr(text, "MemAvailable:");
  unsigned long kib = 0;
  if (!p || sscanf(p, "MemAvailable: %lu kB", &kib) != 1)
    return 0;
  return (size_t) kib * 1024;
}

gboolean
ct_parse_memory_budget(const char *text, size_t *bytes, GError **error)
{
  if (text && g_str_equal(text, "auto")) {
    *bytes = (size_t) (0.9 * (double) mem_available());
    if (*bytes == 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                  "--max-batch-size auto: /proc/meminfo has no MemAvailable");
      return FALSE;
    }
    return TRUE;
  }
  static const struct {
    const char *suffix;
    double factor;
  } units[] = {
    { "GiB", 1073741824.0 }, { "MiB", 1048576.0 }, { "KiB", 1024.0 }, { "G", 1073741824.0 },
    { "M", 1048576.0 },      { "K", 1024.0 },      { "B", 1.0 },      { "", 1.0 },
  };
  char *end = NULL;
  double v = text ? g_ascii_strtod(text, &end) : NAN;
  for (gsize i = 0; end && end != text && i < G_N_ELEMENTS(units); i++)
    if (g_str_equal(end, units[i].suffix) && isfinite(v) && v > 0 && v * units[i].factor < 1e18) {
      *bytes = (size_t) (v * units[i].factor);
      return TRUE;
    }
  g_autofree char *shown = ct_quote_cut(text);
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
              "--max-batch-size: '%s' is not a memory size (e.g. 6GiB, 1500MiB or auto)", shown);
  return FALSE;
}

void
ct_memory_plan(const CtSections *s, CtPrecision precision, int batch, size_t base,
               gboolean fused, CtMemoryPlan *plan)
{
  const CtConfig *cfg = &s->model.cfg;
  size_t n = ct_config_n_params(cfg), F = sizeof(float), B = (size_t) batch;
  gboolean sgd = g_str_equal(s->optimizer.name, "sgd");
  int nchunks = s->model.checkpoint ? s->model.checkpoint_nchunks : 0;
  size_t R = cfg->image_resolution, E = cfg->embed_dim, T = cfg->context_length;
  /* one batch of images and tokens: in the learner and in each prefetched
   * slot of the training loader, plus the validation loader's */
  size_t one = B * (3 * R * R * F + T * sizeof(int32_t));
  size_t slots = 1 + 2 * (size_t) s->data.prefetch;

  /* master weights and gradients */
  plan->params = n * F + (fused ? ct_config_fused_grads(cfg) : n) * F;
  size_t SF = g_str_equal(s->optimizer.state_precision, "bf16") ? 2 : F;
  plan->optimizer = (sgd ? 1 : 2) * n * SF; /* moments (sgd: momentum) */
  plan->activations = ct_config_activation_bytes(cfg, batch, precision, nchunks);
  plan->batches = slots * one + 4 * B * E * F + 2 * B * B * F; /* features, d features, logits */
  plan->other = (size_t) 32 << 20;
  plan->base = base;
  plan->total =
    plan->params + plan->optimizer + plan->activations + plan->batches + plan->other + base;
}

static double
gib(size_t b)
{
  return (double) b / 1073741824.0;
}

int
ct_max_batch_search(const CtSections *s, CtPrecision precision, gboolean fused, size_t budget,
                    int limit, GError **error)
{
  size_t base = ct_rss_now();
  CtMemoryPlan p;
  g_printerr("cliptrain: max-batch-size: budget %.3f GiB; the process holds %.3f GiB; "
             "searching batches 1 to %d\n",
             gib(budget), gib(base), limit);
  int lo = 0, hi = limit; /* lo fits (0: none yet); everything above hi fails */
  int probe = 1;
  while (lo < hi) {
    ct_memory_plan(s, precision, probe, base, fused, &p);
    gboolean fits = p.total <= budget && p.activations > 0;
    g_printerr("cliptrain: max-batch-size: batch %d: %.3f GiB = params+grads %.3f + optimizer "
               "%.3f + activations %.3f + batches %.3f + other %.3f + base %.3f: %s\n",
               probe, gib(p.total), gib(p.params), gib(p.optimizer), gib(p.activations),
               gib(p.batches), gib(p.other), gib(p.base), fits ? "fits" : "too big");
    if (fits)
      lo = probe;
    else
      hi = probe - 1;
    /* double until something fails, then bisect */
    if (fits && hi == limit && probe * 2 <= limit)
      probe *= 2;
    else
      probe = lo + (hi - lo + 1) / 2;
    if (probe <= lo)
      break;
  }
  if (lo == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                "--max-batch-size: even batch 1 needs %.3f GiB, over the budget of %.3f GiB",
                gib(p.total), gib(budget));
    return 0;
  }
  ct_memory_plan(s, precision, lo, base, fused, &p);
  g_printerr("cliptrain: max-batch-size: using batch %d (predicted %.3f GiB of %.3f)\n", lo,
             gib(p.total), gib(budget));
  return lo;
}
