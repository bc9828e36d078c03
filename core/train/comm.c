/* comm.c: the run's communicator: a provider's table, or this process
 * alone, where every collective is a copy. */
#include "config.h"

#include <cliptrain/comm.h>

#include <stdlib.h>
#include <string.h>

struct CtComm {
  char *name;
  const CtCommOps *ops; /* NULL: a single process */
  void *ctx;
};

size_t
ct_comm_type_size(CtCommType type)
{
  switch (type) {
  case CT_COMM_BYTE:
    return 1;
  case CT_COMM_F32:
    return 4;
  case CT_COMM_I64:
  case CT_COMM_F64:
    return 8;
  }
  return 0;
}

CtComm *
ct_comm_new(const char *name, const CtCommOps *ops, void *ctx)
{
  CtComm *c = g_new0(CtComm, 1);
  c->ops = ops;
  c->ctx = ctx;
  c->name = g_strdup(ops ? (name ? name : "?") : "single");
  return c;
}

void
ct_comm_free(CtComm *c)
{
  if (!c)
    return;
  g_free(c->name);
  g_free(c);
}

int
ct_comm_rank(const CtComm *c)
{
  return c && c->ops ? c->ops->rank(c->ctx) : 0;
}

int
ct_comm_size(const CtComm *c)
{
  return c && c->ops ? c->ops->size(c->ctx) : 1;
}

const char *
ct_comm_name(const CtComm *c)
{
  return c ? c->name : "single";
}

gboolean
ct_comm_allreduce(CtComm *c, void *buf, size_t n, CtCommType type, CtCommOp op, GError **error)
{
  if (!c || !c->ops || n == 0)
    return TRUE;
  return c->ops->allreduce(c->ctx, buf, n, type, op, error);
}

gboolean
ct_comm_allgather_counts(CtComm *c, size_t n, size_t *counts, GError **error)
{
  int W = ct_comm_size(c);
  int64_t *all = g_new0(int64_t, W);
  all[ct_comm_rank(c)] = (int64_t) n;
  /* every rank contributes its own entry; the others are zero */
  gboolean ok = ct_comm_allreduce(c, all, (size_t) W, CT_COMM_I64, CT_COMM_SUM, error);
  for (int r = 0; ok && r < W; r++)
    counts[r] = (size_t) all[r];
  g_free(all);
  return ok;
}

gboolean
ct_comm_allgatherv(CtComm *c, const void *send, size_t n, void *recv, size_t *counts,
                   CtCommType type, GError **error)
{
  if (!c || !c->ops) {
    if (counts)
      counts[0] = n;
    if (n && recv != send)
      memmove(recv, send, n * ct_comm_type_size(type));
    return TRUE;
  }
  int W = ct_comm_size(c);
  size_t local[64];
  size_t *cnt = counts ? counts : W <= 64 ? local : g_new(size_t, W);
  gboolean ok = ct_comm_allgather_counts(c, n, cnt, error) &&
                c->ops->allgatherv(c->ctx, send, recv, cnt, type, error);
  if (cnt != counts && cnt != local)
    g_free(cnt);
  return ok;
}

gboolean
ct_comm_broadcast(CtComm *c, void *buf, size_t n, CtCommType type, int root, GError **error)
{
  if (!c || !c->ops || n == 0)
    return TRUE;
  return c->ops->broadcast(c->ctx, buf, n, type, root, error);
}

gboolean
ct_comm_agree(CtComm *c, gboolean ok, const char *others, GError **error)
{
  if (ct_comm_size(c) == 1)
    return ok;
  int64_t all = ok;
  GError *e = NULL;
  if (!ct_comm_allreduce(c, &all, 1, CT_COMM_I64, CT_COMM_MIN, &e)) {
    if (ok)
      g_propagate_error(error, e);
    else
      g_clear_error(&e);
    return FALSE;
  }
  if (ok && !all)
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s", others);
  return ok && all;
}

void
ct_comm_abort(CtComm *c, int code)
{
  if (c && c->ops && c->ops->abort)
    c->ops->abort(c->ctx, code);
  exit(code);
}
