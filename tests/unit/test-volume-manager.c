/* Unit tests for the volume manager's sharing rules (src/capsuled/volume/volume.c) over a real
 * store and an in-memory backend (a unit-test seam: the real backends are tested by
 * tests/integration/test_volumes.py and test_microvms.py, and on LVM by tests/e2e). A microVM
 * holds its volume alone as a disk; containers share a host mount; recovery leaves a volume
 * that a running microVM holds unmounted. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "test.h"
#include "volume/volume.h"

#define MAXV 8
struct mem_backend {
        struct volume_backend base;
        char names[MAXV][64];
        uint64_t sizes[MAXV];
        bool mounted[MAXV];
        int n;
        int mounts, unmounts;
};
#define MB(b) ((struct mem_backend *)(b))

static int find(struct volume_backend *b, const char *name)
{
        for (int i = 0; i < MB(b)->n; i++)
                if (strcmp(MB(b)->names[i], name) == 0)
                        return i;
        return -1;
}

static int mem_create(struct volume_backend *b, const char *name, uint64_t size, const char *owner,
                      struct cap_error *err)
{
        (void)owner;
        (void)err;
        if (find(b, name) >= 0)
                return -EEXIST;
        int i = MB(b)->n++;
        snprintf(MB(b)->names[i], sizeof(MB(b)->names[i]), "%s", name);
        MB(b)->sizes[i] = size;
        return 0;
}

static int mem_owner(struct volume_backend *b, const char *name, char **owner, struct cap_error *err)
{
        (void)err;
        *owner = NULL;
        return find(b, name) < 0 ? -ENOENT : 0;
}

static int mem_remove(struct volume_backend *b, const char *name, struct cap_error *err)
{
        (void)err;
        int i = find(b, name);
        if (i >= 0) {
                int last = --MB(b)->n;
                memmove(MB(b)->names[i], MB(b)->names[last], sizeof(MB(b)->names[i]));
                MB(b)->sizes[i] = MB(b)->sizes[last];
                MB(b)->mounted[i] = MB(b)->mounted[last];
        }
        return 0;
}

static int mem_resize(struct volume_backend *b, const char *name, uint64_t size, struct cap_error *err)
{
        (void)err;
        MB(b)->sizes[find(b, name)] = size;
        return 0;
}

static int mem_mount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        (void)err;
        int i = find(b, name);
        if (!MB(b)->mounted[i])
                MB(b)->mounts++;
        MB(b)->mounted[i] = true;
        return 0;
}

static int mem_unmount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        (void)err;
        int i = find(b, name);
        if (i >= 0 && MB(b)->mounted[i])
                MB(b)->unmounts++;
        if (i >= 0)
                MB(b)->mounted[i] = false;
        return 0;
}

static int mem_stat(struct volume_backend *b, const char *name, uint64_t *size, uint64_t *used,
                    bool *mounted, struct cap_error *err)
{
        (void)err;
        int i = find(b, name);
        if (i < 0)
                return -ENOENT;
        *size = MB(b)->sizes[i];
        *used = 0;
        *mounted = MB(b)->mounted[i];
        return 0;
}

static char *mem_path(struct volume_backend *b, const char *name)
{
        (void)b;
        char *p = NULL;
        return asprintf(&p, "/mnt/%s", name) < 0 ? NULL : p;
}

static int mem_disk(struct volume_backend *b, const char *name, char **path, struct cap_error *err)
{
        (void)err;
        if (find(b, name) < 0)
                return -ENOENT;
        return asprintf(path, "/dev/disk-%s", name) < 0 ? -ENOMEM : 0;
}

static int mem_list(struct volume_backend *b, char ***names, size_t *n, struct cap_error *err)
{
        (void)err;
        *names = calloc((size_t)MB(b)->n + 1, sizeof(char *));
        for (int i = 0; i < MB(b)->n; i++)
                (*names)[i] = strdup(MB(b)->names[i]);
        *n = (size_t)MB(b)->n;
        return 0;
}

static bool mem_can_grow_online(struct volume_backend *b)
{
        (void)b;
        return true;
}

static void mem_free(struct volume_backend *b)
{
        (void)b; /* static */
}

static const struct volume_backend_ops mem_ops = {
    .create = mem_create, .owner = mem_owner, .remove = mem_remove, .resize = mem_resize,
    .mount = mem_mount, .unmount = mem_unmount, .stat = mem_stat, .path = mem_path,
    .disk = mem_disk, .list = mem_list, .can_grow_online = mem_can_grow_online, .free = mem_free,
};

static struct mem_backend mem = {.base = {.name = "file", .ops = &mem_ops}};

static bool is_mounted(const char *name)
{
        return mem.mounted[find(&mem.base, name)];
}

TEST(microvm_holds_its_volume_alone)
{
        char dir[] = "/tmp/capsule-volmgr-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        struct cap_error err = {0};
        struct store *st = NULL;
        CHECK(store_open(dir, &st, &err) == 0);
        struct volumes *v = NULL;
        CHECK(volumes_open(st, &mem.base, &v, &err) == 0);
        bool created;
        CHECK(volume_create(v, "data", 64ull << 20, &created, NULL, &err) == 0);
        CHECK(volume_create(v, "other", 64ull << 20, &created, NULL, &err) == 0);
        CHECK(volumes_recover(v, &err) == 0);
        CHECK(is_mounted("data"));

        /* two containers share the host mount */
        char *path = NULL, *disk = NULL;
        CHECK(volume_attach(v, "data", "web", &path, &err) == 0);
        CHECK_STR_EQ(path, "/mnt/data");
        free(path);
        CHECK(volume_attach(v, "data", "worker", NULL, &err) == 0);
        /* a microVM is refused a volume containers use, naming them; nothing changes */
        CHECK(volume_attach_disk(v, "data", "vm", &disk, &err) == -EBUSY);
        CHECK(err.status == CAP_FAILED_PRECONDITION);
        CHECK_CONTAINS(err.msg, "in use by web, worker");
        CHECK(disk == NULL && is_mounted("data"));
        cap_error_clear(&err);
        volume_detach_all(v, "web");
        volume_detach_all(v, "worker");

        /* the VM gets the disk, unmounted here; again is idempotent */
        CHECK(volume_attach_disk(v, "data", "vm", &disk, &err) == 0);
        CHECK_STR_EQ(disk, "/dev/disk-data");
        free(disk);
        CHECK(!is_mounted("data"));
        CHECK(volume_attach_disk(v, "data", "vm", &disk, &err) == 0);
        free(disk);
        struct volume_info vi;
        CHECK(volume_get(v, "data", &vi, &err) == 0);
        CHECK(vi.disk && vi.n_attached == 1 && strcmp(vi.attached_to[0], "vm") == 0);
        volume_info_free(&vi);

        /* while the VM holds it: a container, a second VM, resize and delete are refused */
        CHECK(volume_attach(v, "data", "web", &path, &err) == -EBUSY);
        CHECK_CONTAINS(err.msg, "microVM vm");
        CHECK(path == NULL && !is_mounted("data"));
        cap_error_clear(&err);
        CHECK(volume_attach_disk(v, "data", "vm2", &disk, &err) == -EBUSY);
        CHECK_CONTAINS(err.msg, "in use by microVM vm");
        cap_error_clear(&err);
        CHECK(volume_resize(v, "data", 128ull << 20, NULL, &err) == -EBUSY);
        CHECK_CONTAINS(err.msg, "disk of microVM vm");
        cap_error_clear(&err);
        CHECK(volume_delete(v, "data", &err) == -EBUSY);
        cap_error_clear(&err);
        CHECK(volume_attach_disk(v, "nope", "vm", &disk, &err) < 0 && err.status == CAP_NOT_FOUND);
        cap_error_clear(&err);

        /* a restart of capsuled: the running VM's volume is claimed and recovery leaves it alone */
        volumes_close(v);
        CHECK(volumes_open(st, &mem.base, &v, &err) == 0);
        CHECK(volume_claim_disk(v, "data", "vm") == 0);
        int mounts = mem.mounts;
        CHECK(volumes_recover(v, &err) == 0);
        CHECK(!is_mounted("data") && is_mounted("other"));
        CHECK(mem.mounts == mounts);
        CHECK(volume_attach(v, "data", "web", NULL, &err) == -EBUSY);
        cap_error_clear(&err);

        /* the VM is deleted: a container mounts it on the host again */
        volume_detach_all(v, "vm");
        CHECK(volume_attach(v, "data", "web", NULL, &err) == 0);
        CHECK(is_mounted("data"));
        volumes_close(v);
        store_close(st);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
}

int main(void)
{
        RUN(microvm_holds_its_volume_alone);
        return test_summary();
}
