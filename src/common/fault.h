/* Fault injection for crash-recovery tests (style.md: SQLite's testing discipline).
 *
 * $CAPSULE_FAULT names one point in the code and what happens there:
 *   CAPSULE_FAULT=POINT            the process kills itself with SIGKILL (a crash of capsuled);
 *   CAPSULE_FAULT=powercut:POINT   the machine powers off at once, without sync (a power cut:
 *                                  dirty page cache and uncommitted dm-thin transactions are lost);
 *   CAPSULE_FAULT=stall:POINT      the code at POINT asks fault_stall() and, when it answers true,
 *                                  hangs as a deadlock would (the process stays up, unresponsive).
 * powercut is honoured only on a Capsule (our parent is PID 1 and PID 1 runs our binary); anywhere
 * else it degrades to SIGKILL, so a test can never power off a development host. On a Capsule the
 * variable comes from the kernel command line (PID 1 passes it to `capsuled serve`); tests set it
 * with `scripts/capsule-up --direct --append CAPSULE_FAULT=...`. Unset in production. */
#pragma once

#include <stdbool.h>

/* Acts as described above when $CAPSULE_FAULT names `point`; otherwise returns at once. */
void fault_point(const char *point);
/* True when $CAPSULE_FAULT is "stall:point" (logged each time it answers true). */
bool fault_stall(const char *point);
