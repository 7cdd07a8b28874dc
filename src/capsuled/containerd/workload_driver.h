/* containerd as a workload driver (driver/driver.h): `kind: Container` workloads are containerd
 * containers (driver.h in this folder says how they are named and labelled). */
#pragma once

#include "common/error.h"

struct ctrd;
struct workload_driver;

/* A driver over the connection c (not owned: the caller frees it after the driver).
 * log_writer is the program the shim runs as each task's log writer (logs/logs.h). */
struct workload_driver *containerd_driver_new(struct ctrd *c, const char *log_writer,
                                              struct cap_error *err);
