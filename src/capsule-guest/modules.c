/* Kernel modules for PID 1 in the microVM: the initramfs holds exactly the modules the guest
 * needs (virtio_mmio, virtio_blk, virtio_net, vsock transport, ...; see mkimage/guest-initrd.sh)
 * with a depmod-made modules.dep, and capsule-guest loads all of them, each after its
 * dependencies, with finit_module. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "guest.h"

#define MAX_MODULES 64
#define MAX_DEPS 16

struct module {
        char path[256]; /* relative to the modules dir */
        char *deps[MAX_DEPS];
        size_t n_deps;
        int state; /* 0 new, 1 loading, 2 done */
};

static struct module *module_find(struct module *mods, size_t n, const char *path)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(mods[i].path, path) == 0)
                        return &mods[i];
        return NULL;
}

static int module_load(const char *dir, struct module *mods, size_t n, struct module *m,
                       struct cap_error *err)
{
        if (m->state == 2)
                return 0;
        if (m->state == 1)
                return cap_error_set(err, -ELOOP, CAP_INTERNAL, "module %s: dependency cycle",
                                     m->path);
        m->state = 1;
        /* modules.dep lists dependencies so that the last is loaded first */
        for (size_t i = m->n_deps; i-- > 0;) {
                struct module *d = module_find(mods, n, m->deps[i]);
                if (!d)
                        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                             "module %s: dependency %s not in the initramfs",
                                             m->path, m->deps[i]);
                int r = module_load(dir, mods, n, d, err);
                if (r < 0)
                        return r;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, m->path);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "module %s: open", path);
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "module %s: finit_module", path);
        m->state = 2;
        return 0;
}

int modules_load_all(const char *dir, struct cap_error *err)
{
        char dep[4096];
        snprintf(dep, sizeof(dep), "%s/modules.dep", dir);
        _cleanup_fclose_ FILE *f = fopen(dep, "re");
        if (!f) {
                if (errno == ENOENT)
                        return 0; /* an initramfs without modules: everything is built in */
                return cap_error_errno(err, -errno, "open %s", dep);
        }
        _cleanup_free_ struct module *mods = calloc(MAX_MODULES, sizeof(*mods));
        size_t n = 0, cap = 0;
        if (!mods)
                return cap_error_errno(err, -ENOMEM, "modules");
        char *line = NULL;
        ssize_t len;
        /* each line: "kernel/a/b.ko: kernel/dep1.ko kernel/dep2.ko" */
        while ((len = getline(&line, &cap, f)) >= 0 && n < MAX_MODULES) {
                char *colon = strchr(line, ':');
                if (!colon)
                        continue;
                *colon = '\0';
                struct module *m = &mods[n++];
                snprintf(m->path, sizeof(m->path), "%s", line);
                char *save = NULL;
                for (char *t = strtok_r(colon + 1, " \t\n", &save); t && m->n_deps < MAX_DEPS;
                     t = strtok_r(NULL, " \t\n", &save))
                        if ((m->deps[m->n_deps] = strdup(t)))
                                m->n_deps++;
        }
        free(line);
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++)
                r = module_load(dir, mods, n, &mods[i], err);
        size_t loaded = 0;
        for (size_t i = 0; i < n; i++) {
                loaded += mods[i].state == 2;
                for (size_t j = 0; j < mods[i].n_deps; j++)
                        free(mods[i].deps[j]);
        }
        if (r == 0)
                log_info("loaded %zu kernel modules from %s", loaded, dir);
        return r;
}
