/* The external programs the microVM driver runs (qemu-system-x86_64, mkfs.ext4, resize2fs), found
 * in $PATH and then in the sbin/bin directories, with a clear error naming the missing program and
 * the Debian package that ships it. */
#pragma once

#include <stddef.h>

#include "common/error.h"

#define VM_QEMU_PROGRAM "qemu-system-x86_64"

/* Writes the absolute path of program `name` to out. An absolute name is checked as it is.
 * -ENOENT with "qemu-system-x86_64: not found in PATH ... (Debian package qemu-system-x86)". */
int vm_tool_find(const char *name, char *out, size_t len, struct cap_error *err);
