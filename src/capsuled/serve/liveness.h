/* serve's sign of life for PID 1 over $CAPSULE_LIVENESS_FD (see liveness.c). */
#pragma once

#include "store/store.h"
#include "rpc/rpc.h"

struct liveness;

/* Starts the checks when PID 1 passed $CAPSULE_LIVENESS_FD; NULL otherwise (or on failure,
 * logged). */
struct liveness *liveness_start(struct store *st);
/* From now on also checks that srv picks up calls. NULL l is a no-op. */
void liveness_watch_rpc(struct liveness *l, struct rpc_server *srv);
/* Stops and frees; before the rpc server and the store go away. NULL is a no-op. */
void liveness_stop(struct liveness *l);
