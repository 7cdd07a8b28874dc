/* The microVM driver (microvm/driver.h, `struct vmd`) behind the workload driver interface
 * (driver.h): `kind: MicroVM` workloads are QEMU microVMs. */
#pragma once

#include <stdint.h>

#include "common/error.h"

struct ctrd;
struct vmd_config;
struct workload_driver;

/* Starts the microVM driver (vmd_new: UNAVAILABLE naming what is missing). images is containerd's
 * image store (not owned), from which a root disk is built the first time an image is used. */
struct workload_driver *microvm_driver_new(const struct vmd_config *cfg, struct ctrd *images,
                                           struct cap_error *err);

/* The vmd under d. */
struct vmd *microvm_driver_vmd(struct workload_driver *d);

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
