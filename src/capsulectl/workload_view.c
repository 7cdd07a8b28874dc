/* Rendering of workloads for `get` and `describe`: table rows, JSON/YAML objects, phase names. */
#include <string.h>
#include <time.h>

#include "capsulectl.h"
#include "common/manifest.h"

const char *ctl_phase_name(Capsule__V1__Phase p)
{
        switch (p) {
        case CAPSULE__V1__PHASE__PENDING: return "Pending";
        case CAPSULE__V1__PHASE__PULLING: return "Pulling";
        case CAPSULE__V1__PHASE__CREATING: return "Creating";
        case CAPSULE__V1__PHASE__RUNNING: return "Running";
        case CAPSULE__V1__PHASE__EXITED: return "Exited";
        case CAPSULE__V1__PHASE__BACKOFF: return "Backoff";
        case CAPSULE__V1__PHASE__FAILED: return "Failed";
        case CAPSULE__V1__PHASE__STOPPING: return "Stopping";
        default: return "Unknown";
        }
}

static long long age_seconds(int64_t unix_nano)
{
        if (!unix_nano)
                return 0;
        return (long long)time(NULL) - unix_nano / 1000000000LL;
}

void ctl_format_time(int64_t unix_nano, char *buf, size_t len)
{
        time_t t = (time_t)(unix_nano / 1000000000LL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void ports_string(const Capsule__V1__WorkloadSpec *s, char *buf, size_t len)
{
        buf[0] = '\0';
        size_t off = 0;
        for (size_t i = 0; i < s->n_ports && off < len; i++) {
                const Capsule__V1__PortMapping *p = s->ports[i];
                off += (size_t)snprintf(buf + off, len - off, "%s%u:%u/%s", i ? "," : "", p->host_port,
                                        p->workload_port, p->protocol && *p->protocol ? p->protocol : "tcp");
        }
        if (!buf[0])
                snprintf(buf, len, "-");
}

void ctl_workload_table_header(FILE *out)
{
        fprintf(out, "%-20s %-10s %-9s %-8s %-8s %-36s %s\n", "NAME", "KIND", "STATUS", "RESTARTS", "AGE", "IMAGE",
               "PORTS");
}

void ctl_workload_table_row(FILE *out, const Capsule__V1__Workload *w)
{
        char age[32], ports[256];
        const Capsule__V1__WorkloadStatus *st = w->status;
        int64_t since = st && st->started_unix_nano ? st->started_unix_nano : w->created_unix_nano;
        ctl_format_age(age_seconds(since), age, sizeof(age));
        ports_string(w->spec, ports, sizeof(ports));
        fprintf(out, "%-20s %-10s %-9s %-8u %-8s %-36s %s\n", w->spec->name, manifest_workload_kind_name(w->spec->kind),
               st ? ctl_phase_name(st->phase) : "Unknown", st ? st->restarts : 0, age, w->spec->image, ports);
}
/* status.microvm: how a MicroVM runs (describe's MicroVM, Kernel and Root disk lines). */
static struct json_object *microvm_json(const Capsule__V1__MicroVMStatus *m)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "accel", json_object_new_string(m->accel ? m->accel : ""));
        json_object_object_add(o, "kernel", json_object_new_string(m->kernel ? m->kernel : ""));
        json_object_object_add(o, "vcpus", json_object_new_int64(m->vcpus));
        json_object_object_add(o, "memoryBytes", json_object_new_int64((int64_t)m->memory_bytes));
        json_object_object_add(o, "diskBytes", json_object_new_int64((int64_t)m->disk_bytes));
        json_object_object_add(o, "vsockCid", json_object_new_int64(m->vsock_cid));
        json_object_object_add(o, "diskBackend", json_object_new_string(m->disk_backend ? m->disk_backend : ""));
        json_object_object_add(o, "disk", json_object_new_string(m->disk ? m->disk : ""));
        json_object_object_add(o, "diskOrigin", json_object_new_string(m->disk_origin ? m->disk_origin : ""));
        json_object_object_add(o, "diskShared", json_object_new_boolean(m->disk_shared));
        return o;
}


struct json_object *ctl_workload_json(const Capsule__V1__Workload *w)
{
        struct json_object *o = json_object_new_object();
        /* the spec through its canonical YAML shape would need a YAML parser here; build it directly */
        const Capsule__V1__WorkloadSpec *s = w->spec;
        struct json_object *spec = json_object_new_object();
        json_object_object_add(spec, "kind", json_object_new_string(manifest_workload_kind_name(s->kind)));
        json_object_object_add(spec, "name", json_object_new_string(s->name));
        json_object_object_add(spec, "image", json_object_new_string(s->image));
        struct json_object *cmd = json_object_new_array(), *args = json_object_new_array();
        for (size_t i = 0; i < s->n_command; i++)
                json_object_array_add(cmd, json_object_new_string(s->command[i]));
        for (size_t i = 0; i < s->n_args; i++)
                json_object_array_add(args, json_object_new_string(s->args[i]));
        json_object_object_add(spec, "command", cmd);
        json_object_object_add(spec, "args", args);
        struct json_object *env = json_object_new_object();
        for (size_t i = 0; i < s->n_env; i++)
                json_object_object_add(env, s->env[i]->key, json_object_new_string(s->env[i]->value));
        json_object_object_add(spec, "env", env);
        if (s->n_secret_env) { /* their values above are "<redacted>" (the server's doing) */
                struct json_object *secret = json_object_new_array();
                for (size_t i = 0; i < s->n_secret_env; i++)
                        json_object_array_add(secret, json_object_new_string(s->secret_env[i]));
                json_object_object_add(spec, "secretEnv", secret);
        }
        struct json_object *ports = json_object_new_array();
        for (size_t i = 0; i < s->n_ports; i++) {
                char p[96];
                snprintf(p, sizeof(p), "%s%s%u:%u/%s", s->ports[i]->host_ip && *s->ports[i]->host_ip ? s->ports[i]->host_ip : "",
                         s->ports[i]->host_ip && *s->ports[i]->host_ip ? ":" : "", s->ports[i]->host_port,
                         s->ports[i]->workload_port, s->ports[i]->protocol);
                json_object_array_add(ports, json_object_new_string(p));
        }
        json_object_object_add(spec, "ports", ports);
        struct json_object *mounts = json_object_new_array();
        for (size_t i = 0; i < s->n_mounts; i++) {
                struct json_object *m = json_object_new_object();
                json_object_object_add(m, "volume", json_object_new_string(s->mounts[i]->volume));
                json_object_object_add(m, "path", json_object_new_string(s->mounts[i]->path));
                json_object_object_add(m, "readOnly", json_object_new_boolean(s->mounts[i]->read_only));
                json_object_array_add(mounts, m);
        }
        json_object_object_add(spec, "mounts", mounts);
        json_object_object_add(spec, "restart", json_object_new_string(manifest_restart_name(s->restart)));
        json_object_object_add(spec, "pullPolicy", json_object_new_string(manifest_pull_policy_name(s->pull_policy)));
        if (s->resources) {
                struct json_object *r = json_object_new_object();
                json_object_object_add(r, "cpus", json_object_new_double(s->resources->cpus));
                json_object_object_add(r, "memoryBytes", json_object_new_int64((int64_t)s->resources->memory_bytes));
                json_object_object_add(spec, "resources", r);
        }
        if (s->working_dir && *s->working_dir)
                json_object_object_add(spec, "workingDir", json_object_new_string(s->working_dir));
        if (s->user && *s->user)
                json_object_object_add(spec, "user", json_object_new_string(s->user));
        json_object_object_add(spec, "privileged", json_object_new_boolean(s->privileged));
        json_object_object_add(o, "spec", spec);
        json_object_object_add(o, "generation", json_object_new_int64((int64_t)w->generation));
        const Capsule__V1__WorkloadStatus *st = w->status;
        if (st) {
                struct json_object *so = json_object_new_object();
                json_object_object_add(so, "phase", json_object_new_string(ctl_phase_name(st->phase)));
                json_object_object_add(so, "pid", json_object_new_int64(st->pid));
                json_object_object_add(so, "restarts", json_object_new_int64(st->restarts));
                json_object_object_add(so, "lastExitCode", json_object_new_int(st->last_exit_code));
                json_object_object_add(so, "lastExitReason", json_object_new_string(st->last_exit_reason));
                json_object_object_add(so, "ipAddress", json_object_new_string(st->ip_address));
                json_object_object_add(so, "message", json_object_new_string(st->message));
                json_object_object_add(so, "observedGeneration", json_object_new_int64((int64_t)st->observed_generation));
                json_object_object_add(so, "imageDigest", json_object_new_string(st->image_digest));
                if (st->started_unix_nano) {
                        char t[40];
                        ctl_format_time(st->started_unix_nano, t, sizeof(t));
                        json_object_object_add(so, "startedAt", json_object_new_string(t));
                }
                if (st->next_restart_unix_nano) {
                        char t[40];
                        ctl_format_time(st->next_restart_unix_nano, t, sizeof(t));
                        json_object_object_add(so, "nextRestartAt", json_object_new_string(t));
                }
                if (st->microvm)
                        json_object_object_add(so, "microvm", microvm_json(st->microvm));
                json_object_object_add(o, "status", so);
        }
        return o;
}
