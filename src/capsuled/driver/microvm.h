/* The microVM driver (microvm/driver.h, `struct vmd`) behind the workload driver interface
 * (driver.h): `kind: MicroVM` workloads are QEMU microVMs. */
#pragma once

#include "common/error.h"

struct ctrd;
struct vmd_config;
struct workload_driver;

/* Starts the microVM driver (vmd_new: UNAVAILABLE naming what is missing). images is containerd's
 * image store (not owned), from which a root disk is built the first time an image is used. */
struct workload_driver *microvm_driver_new(const struct vmd_config *cfg, struct ctrd *images,
                                           struct cap_error *err);

/* The vmd under d, for microVM exec (serve/exec_vm.c) until it is the driver's exec ops. */
struct vmd *microvm_driver_vmd(struct workload_driver *d);
