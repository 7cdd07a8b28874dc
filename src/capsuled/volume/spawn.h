/* Running helper programs (mkfs.ext4, resize2fs, CNI plugins) without a shell: fork/exec with an
 * argv, an optional environment and stdin, capturing stdout and stderr. Safe in capsuled's
 * multi-threaded process (posix_spawn: vfork-style clone + exec, nothing else runs in the child).
 * Used by the volume backends and by the CNI runner (net/cni.c). */
#pragma once

#include <stddef.h>

#include "common/error.h"

struct spawn_opts {
        const char *const *envp; /* NULL = a minimal PATH-only environment */
        const char *input;       /* written to the child's stdin, then closed; NULL = /dev/null */
        size_t input_len;
        int timeout_ms; /* SIGKILL after this long; 0 = 120 s */
};

struct spawn_result {
        int exit_code; /* exit status, or 128 + signal number */
        char *out;     /* stdout, NUL-terminated (at most 1 MiB kept) */
        char *errout;  /* stderr, NUL-terminated, trailing newlines trimmed (at most 64 KiB kept) */
};

/* Finds a program in /usr/sbin, /usr/bin, /sbin, /bin; absolute names are returned as they are.
 * Returns a malloc'd path or NULL (err names the program) when it is not installed. */
char *spawn_find(const char *name, struct cap_error *err);

/* Runs argv[0] (found with spawn_find unless absolute) and waits for it. Returns 0 when it ran
 * (whatever its exit code: check res->exit_code), negative when it could not be run or timed out.
 * The caller frees res with spawn_result_free, also on failure. */
int spawn_run(const char *const *argv, const struct spawn_opts *opts, struct spawn_result *res,
              struct cap_error *err);

/* spawn_run that also treats a non-zero exit as failure: "mkfs.ext4: exit 1: <stderr>". */
int spawn_check(const char *const *argv, const struct spawn_opts *opts, struct cap_error *err);

void spawn_result_free(struct spawn_result *res);

/* Runs `lvm ARGS...` (args NULL-terminated, at most 22) with a plain PATH and fd warnings off; a
 * non-zero exit is an error naming the command and its stderr. *out (if out) is its stdout. */
int spawn_lvm(const char *const *args, char **out, struct cap_error *err);
