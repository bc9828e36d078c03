/* comm.h: the run's process group, as the core and MPI-free plugins see it.
 *
 * A run is one process (world size 1) unless a plugin provides a
 * communicator: the distributed plugins (ddp, distributed_clip_trainer)
 * initialise MPI in their create() and hand the core a CtCommOps table
 * through their descriptor's `comm` entry.  The core itself never links
 * MPI; it uses the table to shard the data, to agree on when to stop, to
 * sum the recorder's values over ranks, and to let only rank 0 write the
 * run's files.  Metrics and other callbacks use the same functions to
 * gather what they need, and work unchanged in a single process, where
 * every operation is a copy or nothing.
 *
 * Every operation is collective: all ranks must call it, in the same
 * order, with matching sizes.  A communicator's operations fail (GError)
 * rather than hang when a peer has died: the MPI plugins wait with a
 * timeout and then abort the whole job. */
#ifndef CLIPTRAIN_COMM_H
#define CLIPTRAIN_COMM_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

typedef enum {
  CT_COMM_BYTE, /* uint8_t */
  CT_COMM_I64,  /* int64_t */
  CT_COMM_F32,  /* float */
  CT_COMM_F64,  /* double */
} CtCommType;

typedef enum {
  CT_COMM_SUM,
  CT_COMM_MAX,
  CT_COMM_MIN,
} CtCommOp;

/* What a communicator provides.  CTX is the providing plugin's state.
 * Counts are in elements of TYPE. */
typedef struct {
  uint32_t struct_size; /* sizeof(CtCommOps) of the provider */
  int (*rank)(void *ctx);
  int (*size)(void *ctx);
  /* In place: BUF (n) becomes the element-wise OP over ranks. */
  gboolean (*allreduce)(void *ctx, void *buf, size_t n, CtCommType type, CtCommOp op,
                        GError **error);
  /* RECV (sum of COUNTS) gets each rank's SEND (counts[rank]) in rank
   * order; COUNTS has size() entries. */
  gboolean (*allgatherv)(void *ctx, const void *send, void *recv, const size_t *counts,
                         CtCommType type, GError **error);
  /* BUF (n) takes ROOT's values. */
  gboolean (*broadcast)(void *ctx, void *buf, size_t n, CtCommType type, int root,
                        GError **error);
  /* End every rank of the job now, with exit status CODE.  Does not
   * return. */
  void (*abort)(void *ctx, int code);
  void *reserved[8];
} CtCommOps;

typedef struct CtComm CtComm;

/* This process's rank in [0, size) and the number of ranks. */
CT_API int ct_comm_rank(const CtComm *comm);
CT_API int ct_comm_size(const CtComm *comm);
/* The provider's name (the plugin's), or "single" without one.
 * (transfer none) */
CT_API const char *ct_comm_name(const CtComm *comm);

CT_API gboolean ct_comm_allreduce(CtComm *comm, void *buf, size_t n, CtCommType type,
                                  CtCommOp op, GError **error);
/* RECV (sum of counts) gets each rank's SEND (n elements) in rank order;
 * COUNTS (size entries) receives every rank's n, and may be NULL.  RECV
 * must hold the total, which the caller can learn first with
 * ct_comm_allgather_counts(). */
CT_API gboolean ct_comm_allgatherv(CtComm *comm, const void *send, size_t n, void *recv,
                                   size_t *counts, CtCommType type, GError **error);
/* COUNTS (size entries) receives every rank's N. */
CT_API gboolean ct_comm_allgather_counts(CtComm *comm, size_t n, size_t *counts,
                                         GError **error);
CT_API gboolean ct_comm_broadcast(CtComm *comm, void *buf, size_t n, CtCommType type, int root,
                                  GError **error);
/* Every rank's OK, agreed: TRUE on all ranks only when all passed TRUE.
 * A rank that passed TRUE while another did not gets an error saying
 * OTHERS (what the others could not do); a rank that passed FALSE keeps
 * its own error.  In a single process it returns OK. */
CT_API gboolean ct_comm_agree(CtComm *comm, gboolean ok, const char *others, GError **error);
/* Ends the whole job with CODE (exit in a single process).  Does not return. */
CT_API G_GNUC_NORETURN void ct_comm_abort(CtComm *comm, int code);

/* Bytes of one element of TYPE. */
CT_API size_t ct_comm_type_size(CtCommType type);

/* A communicator over OPS and CTX (borrowed: they must outlive it), or
 * over this process alone when OPS is NULL.  NAME is copied.
 * (transfer full): free with ct_comm_free(). */
CT_API CtComm *ct_comm_new(const char *name, const CtCommOps *ops, void *ctx);
CT_API void ct_comm_free(CtComm *comm);

G_END_DECLS

#endif
