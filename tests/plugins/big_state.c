/* big_state: a test plugin whose saved state is BYTES bytes of a pattern
 * drawn from SEED, for the round trip of large plugin states through a
 * training state.  state_load checks every byte; after the fit it prints
 * "big_state: restored N bytes" when a state was loaded. */
#include <cliptrain/plugin.h>

#include <string.h>

typedef struct {
  int64_t bytes, seed;
  int64_t restored; /* -1: nothing was loaded */
} BigState;

/* Bytes FROM to FROM + N of the pattern for SEED into DST: a splitmix64
 * word per 8 bytes (FROM a multiple of 8). */
static void
fill(guint8 *dst, int64_t from, int64_t n, int64_t seed)
{
  for (int64_t i = 0; i < n; i += 8) {
    guint64 z = (guint64) seed * 0x9E3779B97F4A7C15u + (guint64) (from + i);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    memcpy(dst + i, &z, (size_t) MIN(8, n - i));
  }
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  BigState *s = state;
  (void) L;
  (void) error;
  if (event == CT_EVENT_AFTER_FIT && s->restored >= 0)
    g_printerr("big_state: restored %" G_GINT64_FORMAT " bytes\n", s->restored);
  return CT_STATUS_OK;
}

static GBytes *
state_save(void *state)
{
  BigState *s = state;
  guint8 *data = g_malloc((gsize) s->bytes); /* (bytes) */
  fill(data, 0, s->bytes, s->seed);
  return g_bytes_new_take(data, (gsize) s->bytes);
}

static gboolean
state_load(void *state, GBytes *bytes, GError **error)
{
  BigState *s = state;
  gsize len;
  const guint8 *got = g_bytes_get_data(bytes, &len);
  if ((int64_t) len != s->bytes) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "big_state: %zu bytes, %" G_GINT64_FORMAT
                " expected", (size_t) len, s->bytes);
    return FALSE;
  }
  guint8 want[1 << 16]; /* (chunk) */
  for (int64_t i = 0; i < s->bytes; i += (int64_t) sizeof want) {
    int64_t n = MIN((int64_t) sizeof want, s->bytes - i);
    fill(want, i, n, s->seed);
    if (memcmp(want, got + i, (size_t) n) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "big_state: bytes differ near offset %"
                  G_GINT64_FORMAT, i);
      return FALSE;
    }
  }
  s->restored = s->bytes;
  return TRUE;
}

static void *
create(const CtParams *params, GError **error)
{
  (void) error;
  BigState *s = g_new0(BigState, 1);
  s->bytes = ct_params_get_int(params, "bytes");
  s->seed = ct_params_get_int(params, "seed");
  s->restored = -1;
  return s;
}

static const CtParamSpec schema[] = {
  CT_PARAM("bytes", CT_PARAM_INT, "1000", "size of the saved state", 0, 4e9, NULL),
  CT_PARAM("seed", CT_PARAM_INT, "1", "seed of its pattern", 0, 1e9, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "big_state", .version = "1", .doc = "A large saved state, for the tests",
                 .events = CT_EVENT_BIT(CT_EVENT_AFTER_FIT), .params = schema, .create = create,
                 .destroy = g_free, .on_event = on_event, .state_save = state_save,
                 .state_load = state_load)
