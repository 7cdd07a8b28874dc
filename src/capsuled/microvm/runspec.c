/* A microVM's run config from the same OCI runtime spec a container of the workload would get.
 *
 * spec_generate (containerd/spec.c) already merges the image config (Entrypoint, Cmd, Env,
 * WorkingDir, User) with the manifest (command, args, env, working_dir, user) and resolves user
 * names against the image's /etc/passwd. Rather than a second copy of those rules, the microVM
 * driver generates that spec and reads its process section into capsule.guest.v1.RunConfig, so
 * flipping `kind` between Container and MicroVM runs exactly the same command. */
#include "runspec.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

static char *dup_str(struct json_object *o)
{
        const char *s = o ? json_object_get_string(o) : NULL;
        return strdup(s ? s : "");
}

/* Copies a JSON array of strings into a malloc'd char* array. */
static int str_array(struct json_object *arr, char ***out, size_t *n)
{
        size_t len =
            arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
        *out = calloc(len + 1, sizeof(char *));
        if (!*out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (!((*out)[i] = dup_str(json_object_array_get_idx(arr, i))))
                        return -ENOMEM;
                *n = i + 1;
        }
        return 0;
}

int vm_runconfig_from_spec(const char *spec_json, const char *hostname,
                           const struct vm_runspec_volume *volumes, size_t n_volumes,
                           uint32_t stop_grace_seconds, RunConfig **out, struct cap_error *err)
{
        struct json_object *spec = json_tokener_parse(spec_json);
        if (!spec)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "run config: the generated spec is not JSON");
        RunConfig *rc = calloc(1, sizeof(*rc));
        if (!rc) {
                json_object_put(spec);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        capsule__guest__v1__run_config__init(rc);
        struct json_object *proc = NULL, *user = NULL, *o = NULL;
        json_object_object_get_ex(spec, "process", &proc);
        if (proc)
                json_object_object_get_ex(proc, "user", &user);
        int r = 0;
        if (proc && json_object_object_get_ex(proc, "args", &o))
                r = str_array(o, &rc->argv, &rc->n_argv);
        if (r == 0 && proc && json_object_object_get_ex(proc, "env", &o))
                r = str_array(o, &rc->env, &rc->n_env);
        if (r == 0) {
                o = NULL;
                if (proc)
                        json_object_object_get_ex(proc, "cwd", &o);
                rc->working_dir = dup_str(o);
                rc->hostname = strdup(hostname ? hostname : "");
                if (!rc->working_dir || !rc->hostname)
                        r = -ENOMEM;
        }
        if (r == 0 && user) {
                if (json_object_object_get_ex(user, "uid", &o))
                        rc->uid = (uint32_t)json_object_get_int64(o);
                if (json_object_object_get_ex(user, "gid", &o))
                        rc->gid = (uint32_t)json_object_get_int64(o);
                struct json_object *gids = NULL;
                if (json_object_object_get_ex(user, "additionalGids", &gids) &&
                    json_object_is_type(gids, json_type_array)) {
                        size_t n = json_object_array_length(gids);
                        rc->additional_gids = calloc(n + 1, sizeof(uint32_t));
                        if (!rc->additional_gids)
                                r = -ENOMEM;
                        for (size_t i = 0; r == 0 && i < n; i++)
                                rc->additional_gids[rc->n_additional_gids++] =
                                    (uint32_t)json_object_get_int64(
                                        json_object_array_get_idx(gids, i));
                }
        }
        json_object_put(spec);
        if (r == 0 && n_volumes) {
                rc->volumes = calloc(n_volumes, sizeof(*rc->volumes));
                if (!rc->volumes)
                        r = -ENOMEM;
                for (size_t i = 0; r == 0 && i < n_volumes; i++) {
                        Capsule__Guest__V1__VolumeMount *m = calloc(1, sizeof(*m));
                        if (!m) {
                                r = -ENOMEM;
                                break;
                        }
                        capsule__guest__v1__volume_mount__init(m);
                        rc->volumes[rc->n_volumes++] = m;
                        m->device = strdup(volumes[i].device);
                        m->path = strdup(volumes[i].path);
                        m->read_only = volumes[i].read_only;
                        if (!m->device || !m->path)
                                r = -ENOMEM;
                }
        }
        rc->stop_grace_seconds = stop_grace_seconds;
        if (r < 0) {
                runconfig_free(rc);
                return cap_error_set(err, r, CAP_INTERNAL, "run config: out of memory");
        }
        if (runconfig_validate(rc, err) < 0) {
                runconfig_free(rc);
                return cap_error_prefix(err, "run config");
        }
        *out = rc;
        return 0;
}
