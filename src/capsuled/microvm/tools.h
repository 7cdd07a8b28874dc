/* The external programs the microVM driver runs (qemu-system-x86_64, mkfs.ext4, resize2fs), found
 * in $PATH and then in the sbin/bin directories, with a clear error naming the missing program and
 * the Debian package that ships it; and the small helpers the VMM files share. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"

/* close_range(2)'s flag, for libc headers older than the kernel's. */
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* CLOCK_MONOTONIC in milliseconds: the deadlines of the VMM layer. */
static inline int64_t vm_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define VM_QEMU_PROGRAM "qemu-system-x86_64"

/* Writes the absolute path of program `name` to out. An absolute name is checked as it is.
 * -ENOENT with "qemu-system-x86_64: not found in PATH ... (Debian package qemu-system-x86)". */
int vm_tool_find(const char *name, char *out, size_t len, struct cap_error *err);
