/* mpi-comm.c: MPI for the distributed plugins (see mpi-comm.h). */
#include "config.h"

#include "mpi-comm.h"

#include <dlfcn.h>
#include <unistd.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Plugins are opened with RTLD_LOCAL, so libmpi, loaded as their
 * dependency, is local too; Open MPI's own components then cannot find
 * its symbols.  Opening it again with RTLD_GLOBAL (RTLD_NOLOAD: it is
 * already there) makes them visible, as mpi4py does. */
static void
promote_libmpi(void)
{
  Dl_info info;
  if (dladdr((void *) MPI_Init_thread, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

static void
finalize_at_exit(void)
{
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin)
    MPI_Finalize();
}

gboolean
ct_mpi_check(CtMpi *m, int rc, const char *what, GError **error)
{
  if (rc == MPI_SUCCESS)
    return TRUE;
  char msg[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: rank %d of %d: %s failed: %s", m->who,
              m->rank, m->size, what, msg);
  return FALSE;
}

gboolean
ct_mpi_setup(CtMpi *m, const char *who, double timeout, GError **error)
{
  m->who = who;
  m->timeout = timeout;
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (fin) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: MPI was already finalised", who);
    return FALSE;
  }
  if (!init) {
    promote_libmpi();
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: MPI_Init_thread failed", who);
      return FALSE;
    }
    /* errors come back as codes, so that they become messages */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    atexit(finalize_at_exit); /* plugins stay loaded until exit */
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &m->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &m->size);
  return TRUE;
}

void
ct_mpi_poke(MPI_Request *reqs, int n)
{
  int flag = 0;
  if (n > 0)
    MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE);
}

gboolean
ct_mpi_wait(CtMpi *m, MPI_Request *reqs, int n, const char *what, GError **error)
{
  gint64 t0 = g_get_monotonic_time();
  for (long spins = 0;; spins++) {
    int flag = 0;
    int rc = MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE);
    if (!ct_mpi_check(m, rc, what, error))
      return FALSE;
    if (flag)
      return TRUE;
    if (m->timeout > 0 && (g_get_monotonic_time() - t0) / 1e6 > m->timeout) {
      /* a peer died or hangs: say so once and end the job rather than wait
       * for ever (mpirun and srun then end the other ranks) */
      g_printerr("cliptrain: %s: rank %d of %d: %s did not complete within %g s: another rank "
                 "has died or hangs; aborting the job\n",
                 m->who, m->rank, m->size, what, m->timeout);
      MPI_Abort(MPI_COMM_WORLD, 1);
      _exit(1);
    }
    if (spins > 2000) /* past a short spin, leave the core to the others */
      g_usleep(50);
  }
}

gboolean
ct_mpi_count(size_t n, int *count, const char *what, GError **error)
{
  if (n > INT_MAX) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "%s: %zu elements are more than MPI's %d",
                what, n, INT_MAX);
    return FALSE;
  }
  *count = (int) n;
  return TRUE;
}

/* ---------------------------------------------------------------- comm.h */

static MPI_Datatype
mpi_type(CtCommType t)
{
  switch (t) {
  case CT_COMM_BYTE:
    return MPI_BYTE;
  case CT_COMM_I64:
    return MPI_INT64_T;
  case CT_COMM_F32:
    return MPI_FLOAT;
  case CT_COMM_F64:
    return MPI_DOUBLE;
  }
  return MPI_BYTE;
}

static MPI_Op
mpi_op(CtCommOp op)
{
  return op == CT_COMM_MAX ? MPI_MAX : op == CT_COMM_MIN ? MPI_MIN : MPI_SUM;
}

static int
comm_rank(void *ctx)
{
  return ((CtMpi *) ctx)->rank;
}

static int
comm_size(void *ctx)
{
  return ((CtMpi *) ctx)->size;
}

static gboolean
comm_allreduce(void *ctx, void *buf, size_t n, CtCommType type, CtCommOp op, GError **error)
{
  CtMpi *m = ctx;
  int count;
  MPI_Request req;
  if (!ct_mpi_count(n, &count, "allreduce", error) ||
      !ct_mpi_check(m, MPI_Iallreduce(MPI_IN_PLACE, buf, count, mpi_type(type), mpi_op(op),
                                      MPI_COMM_WORLD, &req),
                    "allreduce", error))
    return FALSE;
  return ct_mpi_wait(m, &req, 1, "allreduce", error);
}

static gboolean
comm_allgatherv(void *ctx, const void *send, void *recv, const size_t *counts, CtCommType type,
                GError **error)
{
  CtMpi *m = ctx;
  int *cnt = g_new(int, m->size), *displs = g_new(int, m->size);
  size_t total = 0;
  gboolean ok = TRUE;
  for (int r = 0; ok && r < m->size; r++) {
    ok = ct_mpi_count(counts[r], &cnt[r], "allgatherv", error) &&
         ct_mpi_count(total, &displs[r], "allgatherv", error);
    total += counts[r];
  }
  MPI_Request req;
  ok = ok && ct_mpi_check(m, MPI_Iallgatherv(send, cnt[m->rank], mpi_type(type), recv, cnt,
                                             displs, mpi_type(type), MPI_COMM_WORLD, &req),
                          "allgatherv", error) &&
       ct_mpi_wait(m, &req, 1, "allgatherv", error);
  g_free(cnt);
  g_free(displs);
  return ok;
}

static gboolean
comm_broadcast(void *ctx, void *buf, size_t n, CtCommType type, int root, GError **error)
{
  CtMpi *m = ctx;
  int count;
  MPI_Request req;
  if (!ct_mpi_count(n, &count, "broadcast", error) ||
      !ct_mpi_check(m, MPI_Ibcast(buf, count, mpi_type(type), root, MPI_COMM_WORLD, &req),
                    "broadcast", error))
    return FALSE;
  return ct_mpi_wait(m, &req, 1, "broadcast", error);
}

static void
comm_abort(void *ctx, int code)
{
  MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
}

static const CtCommOps mpi_ops = {
  .struct_size = sizeof(CtCommOps),
  .rank = comm_rank,
  .size = comm_size,
  .allreduce = comm_allreduce,
  .allgatherv = comm_allgatherv,
  .broadcast = comm_broadcast,
  .abort = comm_abort,
};

const CtCommOps *
ct_mpi_comm_ops(void)
{
  return &mpi_ops;
}
