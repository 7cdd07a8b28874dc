/* Locating external programs (see tools.h). */
#include "tools.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

static const char *package_of(const char *name)
{
        if (strncmp(name, "qemu-system-", 12) == 0)
                return "qemu-system-x86";
        if (strcmp(name, "mkfs.ext4") == 0 || strcmp(name, "resize2fs") == 0 ||
            strcmp(name, "e2fsck") == 0)
                return "e2fsprogs";
        return NULL;
}

static int try_dir(const char *dir, size_t dlen, const char *name, char *out, size_t len)
{
        if (dlen == 0)
                return -ENOENT;
        if ((size_t)snprintf(out, len, "%.*s/%s", (int)dlen, dir, name) >= len)
                return -ENAMETOOLONG;
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
                return 0;
        return -ENOENT;
}

int vm_tool_find(const char *name, char *out, size_t len, struct cap_error *err)
{
        if (name[0] == '/') {
                if (access(name, X_OK) < 0)
                        return cap_error_errno(err, -errno, "%s", name);
                if ((size_t)snprintf(out, len, "%s", name) >= len)
                        return cap_error_set(err, -ENAMETOOLONG, CAP_INTERNAL, "%s: too long",
                                             name);
                return 0;
        }
        if (strchr(name, '/'))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: want a program name or an absolute path", name);
        const char *path = getenv("PATH");
        for (const char *p = path; p && *p;) {
                const char *colon = strchr(p, ':');
                size_t n = colon ? (size_t)(colon - p) : strlen(p);
                if (p[0] == '/' && try_dir(p, n, name, out, len) == 0)
                        return 0;
                p += n + (colon ? 1 : 0);
        }
        static const char *const dirs[] = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
                if (try_dir(dirs[i], strlen(dirs[i]), name, out, len) == 0)
                        return 0;
        const char *pkg = package_of(name);
        return cap_error_set(err, -ENOENT, CAP_FAILED_PRECONDITION,
                             "%s: not found in PATH or /usr/sbin, /usr/bin, /sbin, /bin%s%s%s",
                             name, pkg ? " (Debian package " : "", pkg ? pkg : "", pkg ? ")" : "");
}
