/* microvm/runspec.c: a microVM's RunConfig comes from the same OCI spec a container gets, so the
 * image's entrypoint/cmd/env/workdir/user and the manifest's overrides resolve the same way. */
#include <stdlib.h>

#include "containerd/spec.h"
#include "microvm/runspec.h"
#include "test.h"

static RunConfig *from(const Capsule__V1__WorkloadSpec *w, const char *image_config,
                       const struct vm_runspec_volume *vols, size_t n_vols, struct cap_error *err)
{
        const char *sources[4] = {"/unused/a", "/unused/b", "/unused/c", "/unused/d"};
        struct spec_options o = {
            .workload = w, .image_config_json = image_config, .volume_sources = sources};
        char *json = NULL;
        if (spec_generate(&o, &json, err) < 0)
                return NULL;
        RunConfig *rc = NULL;
        int r = vm_runconfig_from_spec(json, w->name, vols, n_vols, 7, &rc, err);
        free(json);
        return r < 0 ? NULL : rc;
}

TEST(image_entrypoint_cmd_env_user)
{
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        w.name = "web";
        struct cap_error err = {0};
        RunConfig *rc =
            from(&w,
                 "{\"config\":{\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo hi\"],"
                 "\"Env\":[\"PATH=/img/bin\",\"A=1\"],\"WorkingDir\":\"/srv\","
                 "\"User\":\"12:34\"}}",
                 NULL, 0, &err);
        CHECK(rc != NULL);
        if (!rc) {
                fprintf(stderr, "  %s\n", err.msg);
                return;
        }
        CHECK(rc->n_argv == 3);
        CHECK_STR_EQ(rc->argv[0], "/bin/sh");
        CHECK_STR_EQ(rc->argv[2], "echo hi");
        int path = 0, a = 0;
        for (size_t i = 0; i < rc->n_env; i++) {
                path |= strcmp(rc->env[i], "PATH=/img/bin") == 0;
                a |= strcmp(rc->env[i], "A=1") == 0;
        }
        CHECK(path && a);
        CHECK_STR_EQ(rc->working_dir, "/srv");
        CHECK(rc->uid == 12 && rc->gid == 34);
        CHECK_STR_EQ(rc->hostname, "web");
        CHECK(rc->stop_grace_seconds == 7);
        runconfig_free(rc);
}

TEST(manifest_overrides_and_volumes)
{
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        char *cmd[] = {"httpd"}, *args[] = {"-f", "-p", "80"};
        Capsule__V1__Mount m = CAPSULE__V1__MOUNT__INIT;
        m.volume = "site";
        m.path = "/www";
        Capsule__V1__Mount *mounts[] = {&m};
        w.name = "web";
        w.command = cmd;
        w.n_command = 1;
        w.args = args;
        w.n_args = 3;
        w.mounts = mounts;
        w.n_mounts = 1;
        w.working_dir = "/www";
        /* a secret env value is redacted in API output only: the guest gets the value */
        Capsule__V1__WorkloadSpec__EnvEntry e = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT;
        Capsule__V1__WorkloadSpec__EnvEntry *env[] = {&e};
        char *secret[] = {"TOKEN"};
        e.key = "TOKEN";
        e.value = "s3cr3t";
        w.env = env;
        w.n_env = 1;
        w.secret_env = secret;
        w.n_secret_env = 1;
        struct vm_runspec_volume vols[] = {{.device = "/dev/vdc", .path = "/www"}};
        struct cap_error err = {0};
        RunConfig *rc = from(&w, "{\"config\":{\"Cmd\":[\"sh\"]}}", vols, 1, &err);
        CHECK(rc != NULL);
        if (!rc)
                return;
        CHECK(rc->n_argv == 4);
        CHECK_STR_EQ(rc->argv[0], "httpd");
        CHECK_STR_EQ(rc->argv[3], "80");
        CHECK_STR_EQ(rc->working_dir, "/www");
        CHECK(rc->n_volumes == 1);
        CHECK_STR_EQ(rc->volumes[0]->device, "/dev/vdc");
        CHECK_STR_EQ(rc->volumes[0]->path, "/www");
        CHECK(rc->uid == 0 && rc->gid == 0);
        bool token = false;
        for (size_t i = 0; i < rc->n_env; i++)
                token |= strcmp(rc->env[i], "TOKEN=s3cr3t") == 0;
        CHECK(token);
        runconfig_free(rc);
}

TEST(refused)
{
        struct cap_error err = {0};
        RunConfig *rc = NULL;
        CHECK(vm_runconfig_from_spec("{not json", "x", NULL, 0, 10, &rc, &err) < 0);
        /* a spec without process.args: the guest would have nothing to run */
        CHECK(vm_runconfig_from_spec("{\"process\":{\"args\":[]}}", "x", NULL, 0, 10, &rc, &err) <
              0);
        CHECK_CONTAINS(err.msg, "run config");
        struct vm_runspec_volume bad[] = {{.device = "/dev/vdc", .path = "relative"}};
        CHECK(vm_runconfig_from_spec("{\"process\":{\"args\":[\"sh\"]}}", "x", bad, 1, 10, &rc,
                                     &err) < 0);
        CHECK(rc == NULL);
}

int main(void)
{
        RUN(image_entrypoint_cmd_env_user);
        RUN(manifest_overrides_and_volumes);
        RUN(refused);
        return test_summary();
}
