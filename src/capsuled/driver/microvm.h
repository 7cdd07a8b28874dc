/* The microVM driver (microvm/driver.h, `struct vmd`) behind the workload driver interface
 * (driver.h): `kind: MicroVM` workloads are QEMU microVMs. */
#pragma once

#include <stdint.h>

#include "common/error.h"
#include "microvm/driver.h"

struct ctrd;
struct vmd_config;
struct workload_driver;

/* Starts the microVM driver (vmd_new: UNAVAILABLE naming what is missing). images is containerd's
 * image store (not owned), from which a root disk is built the first time an image is used. */
struct workload_driver *microvm_driver_new(const struct vmd_config *cfg, struct ctrd *images,
                                           struct cap_error *err);

/* The vmd under d. */
struct vmd *microvm_driver_vmd(struct workload_driver *d);

/* Who hears of each root disk cache removed (serve: an event), set before the reconciler runs. */
void microvm_driver_on_cache_gone(struct workload_driver *d, vmd_cache_gone_fn fn, void *ud);

/* Removes the root disk caches of images containerd no longer holds that no microVM claims
 * (vmd_rootdisk_collect), telling on_cache_gone's fn of each; why says what triggered it ("image
 * X deleted", "start", "microVM X removed"). Runs after an image delete, after each microVM
 * removal and at start. Returns how many were removed; negative (nothing removed) when the
 * images cannot be listed. */
int microvm_driver_rootdisk_collect(struct workload_driver *d, const char *why,
                                    struct cap_error *err);

/* The exec ops (microvm_exec.c): the process runs in the VM through capsule-guest's Exec over
 * vsock; FAILED_PRECONDITION without a guest channel (no /dev/vhost-vsock). */
struct driver_exec;
struct driver_exec_req;
int microvm_exec_start(struct workload_driver *d, const struct driver_exec_req *req, struct driver_exec **x,
                       uint32_t *pid, struct cap_error *err);
int microvm_exec_resize(struct workload_driver *d, struct driver_exec *x, uint32_t cols, uint32_t rows,
                        struct cap_error *err);
int microvm_exec_close_stdin(struct workload_driver *d, struct driver_exec *x, struct cap_error *err);
int microvm_exec_wait(struct workload_driver *d, struct driver_exec *x, int timeout_ms, uint32_t *exit_status,
                      struct cap_error *err);
int microvm_exec_kill(struct workload_driver *d, struct driver_exec *x, int sig, struct cap_error *err);
void microvm_exec_delete(struct workload_driver *d, struct driver_exec *x);
