/* The run config disk: the framing the host's microVM driver writes to the guest's first disk
 * and capsule-guest reads back. Layout: the 8 bytes "CAPSULE1", a little-endian uint32 length,
 * that many bytes of a protobuf capsule.guest.v1.RunConfig, zero padding to a multiple of 512.
 *
 * This file is also a small library for the host (guest_config_dep in meson): encode, write,
 * read, decode. It depends only on protobuf-c, the generated guest.pb-c and common/error. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "capsule/guest/v1/guest.pb-c.h"
#include "common/error.h"

#define RUNCONFIG_MAGIC "CAPSULE1"
#define RUNCONFIG_MAGIC_LEN 8
#define RUNCONFIG_HEADER_LEN 12
#define RUNCONFIG_SECTOR 512
/* Largest accepted message: far above any real config (argv, env, volumes), small enough that a
 * corrupt length cannot make the guest allocate much. */
#define RUNCONFIG_MAX_LEN (4u << 20)

/* The console line capsule-guest prints when the workload ends, followed by the exit code (128 +
 * signal for a signal) and a newline: the host's microVM driver reads it from the VM's log, so
 * the exit code is known even without a guest channel (hosts without vhost-vsock). */
#define RUNCONFIG_EXIT_MARKER "capsule-guest: exit-code="

/* The vsock port capsule-guest serves capsule.guest.v1 on (the host dials CID:port). */
#define GUEST_VSOCK_PORT 1024

typedef Capsule__Guest__V1__RunConfig RunConfig;

/* Encodes rc into a malloc'd buffer framed and padded to a multiple of 512 (*len). Fails if rc
 * does not validate (runconfig_validate). */
int runconfig_encode(const RunConfig *rc, uint8_t **buf, size_t *len, struct cap_error *err);

/* Decodes a framed buffer (as read from the disk, padding optional). `what` names the source in
 * messages ("/dev/vda: bad magic ..."). On success *out is a RunConfig to free with
 * runconfig_free. Checks the magic, the length against len and RUNCONFIG_MAX_LEN, the protobuf
 * and runconfig_validate. */
int runconfig_decode(const uint8_t *buf, size_t len, const char *what, RunConfig **out,
                     struct cap_error *err);

/* Sanity rules the guest relies on: argv non-empty with no empty argv[0], env entries
 * KEY=VALUE, working_dir empty or absolute, volume paths absolute without "..", not "/" and a
 * device given. */
int runconfig_validate(const RunConfig *rc, struct cap_error *err);

/* Reads and decodes the file or block device at path (reads only what the header says). */
int runconfig_read_file(const char *path, RunConfig **out, struct cap_error *err);
/* Encodes and writes rc to path (created or truncated, mode 0644). */
int runconfig_write_file(const char *path, const RunConfig *rc, struct cap_error *err);

void runconfig_free(RunConfig *rc);
