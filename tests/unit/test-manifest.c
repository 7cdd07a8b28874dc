/* Unit tests for the manifest layer (src/common/manifest.h) and quantities (quantity.h):
 * parsing, every validation rule with its exact message, canonical YAML round trips, and the
 * example manifests under examples/ (directory given as argv[1]). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "manifest.h"
#include "test.h"

static const char *examples_dir = EXAMPLES_DIR;

struct parsed {
        struct manifest_set set;
        struct manifest_errors errs;
        char *text; /* all errors joined with '\n' */
        int r;
};

static void parse(struct parsed *p, const char *yaml)
{
        memset(p, 0, sizeof(*p));
        manifest_errors_init(&p->errs);
        p->r = manifest_parse("t.yaml", yaml, strlen(yaml), &p->set, &p->errs);
        p->text = manifest_errors_join(&p->errs, "\n");
        if (p->r < 0 && getenv("TEST_VERBOSE"))
                fprintf(stderr, "%s\n", p->text);
}

static void parsed_free(struct parsed *p)
{
        manifest_set_free(&p->set);
        manifest_errors_free(&p->errs);
        free(p->text);
}

/* Parses yaml, expects failure and that the errors contain needle. */
#define EXPECT_ERROR(yaml, needle)                                                                 \
        do {                                                                                       \
                struct parsed _p;                                                                  \
                parse(&_p, yaml);                                                                  \
                CHECK(_p.r < 0);                                                                   \
                CHECK(_p.set.n == 0);                                                              \
                CHECK_CONTAINS(_p.text, needle);                                                   \
                parsed_free(&_p);                                                                  \
        } while (0)

#define HDR "kind: Container\nname: web\nimage: capsule.local/busybox:latest\n"

TEST(full_container)
{
        struct parsed p;
        parse(&p, "# a comment\n"
                  "kind: Container\n"
                  "name: web\n"
                  "image: registry.lan/nginx:1.25\n"
                  "command: [\"nginx\"]\n"
                  "args: [\"-g\", \"daemon off;\"]\n"
                  "env: {TZ: Europe/Paris, B: \"2\"}\n"
                  "ports: [\"8080:80/tcp\", \"127.0.0.1:5353:53/udp\", \"9090:90\"]\n"
                  "mounts:\n"
                  "  - {volume: site, path: /usr/share/nginx/html, readOnly: true}\n"
                  "restart: on-failure\n"
                  "resources: {cpus: 0.5, memory: 256Mi}\n"
                  "pullPolicy: Always\n"
                  "workingDir: /srv\n"
                  "user: \"1000:1000\"\n"
                  "privileged: true\n");
        CHECK(p.r == 0);
        CHECK(p.set.n == 1);
        if (p.set.n == 1) {
                const struct manifest_doc *d = &p.set.docs[0];
                const Capsule__V1__WorkloadSpec *w = d->workload;
                CHECK(d->kind == MANIFEST_KIND_CONTAINER);
                CHECK(d->index == 1);
                CHECK(d->line == 2);
                CHECK_STR_EQ(d->file, "t.yaml");
                CHECK(w->kind == CAPSULE__V1__WORKLOAD_KIND__CONTAINER);
                CHECK_STR_EQ(w->name, "web");
                CHECK_STR_EQ(w->image, "registry.lan/nginx:1.25");
                CHECK(w->n_command == 1 && strcmp(w->command[0], "nginx") == 0);
                CHECK(w->n_args == 2 && strcmp(w->args[1], "daemon off;") == 0);
                CHECK(w->n_env == 2);
                /* normalised: sorted by key */
                CHECK_STR_EQ(w->env[0]->key, "B");
                CHECK_STR_EQ(w->env[0]->value, "2");
                CHECK_STR_EQ(w->env[1]->key, "TZ");
                CHECK(w->n_ports == 3);
                CHECK(w->ports[0]->host_port == 8080 && w->ports[0]->workload_port == 80);
                CHECK_STR_EQ(w->ports[0]->protocol, "tcp");
                CHECK_STR_EQ(w->ports[0]->host_ip, "");
                CHECK_STR_EQ(w->ports[1]->host_ip, "127.0.0.1");
                CHECK_STR_EQ(w->ports[1]->protocol, "udp");
                CHECK(w->ports[1]->host_port == 5353 && w->ports[1]->workload_port == 53);
                CHECK_STR_EQ(w->ports[2]->protocol, "tcp");
                CHECK(w->n_mounts == 1 && w->mounts[0]->read_only);
                CHECK_STR_EQ(w->mounts[0]->volume, "site");
                CHECK_STR_EQ(w->mounts[0]->path, "/usr/share/nginx/html");
                CHECK(d->mount_lines[0] == 10);
                CHECK(d->port_lines[1] == 8);
                CHECK(w->restart == CAPSULE__V1__RESTART_POLICY__ON_FAILURE);
                CHECK(w->resources && w->resources->cpus == 0.5);
                CHECK(w->resources && w->resources->memory_bytes == 256ULL << 20);
                CHECK(w->pull_policy == CAPSULE__V1__PULL_POLICY__PULL_ALWAYS);
                CHECK_STR_EQ(w->working_dir, "/srv");
                CHECK_STR_EQ(w->user, "1000:1000");
                CHECK(w->privileged);
                CHECK_STR_EQ(w->accel, "");
        }
        parsed_free(&p);
}

TEST(defaults_and_multidoc)
{
        struct parsed p;
        parse(&p, "---\n" HDR "---\n"
                  "# only a comment\n"
                  "---\n"
                  "kind: Volume\nname: site\nsize: 1Gi\n"
                  "---\n"
                  "kind: MicroVM\nname: vm1\nimage: capsule.local/busybox:latest\n"
                  "accel: tcg\ndisk: 2Gi\n"
                  "---\n");
        CHECK(p.r == 0);
        CHECK(p.set.n == 3);
        if (p.set.n == 3) {
                const Capsule__V1__WorkloadSpec *w = p.set.docs[0].workload;
                CHECK(w->restart == CAPSULE__V1__RESTART_POLICY__ALWAYS);
                CHECK(w->pull_policy == CAPSULE__V1__PULL_POLICY__IF_NOT_PRESENT);
                CHECK(w->resources == NULL);
                CHECK(p.set.docs[1].kind == MANIFEST_KIND_VOLUME);
                CHECK(p.set.docs[1].index == 3);
                CHECK_STR_EQ(p.set.docs[1].volume_name, "site");
                CHECK(p.set.docs[1].volume_size == 1ULL << 30);
                CHECK(p.set.docs[1].workload == NULL);
                const Capsule__V1__WorkloadSpec *vm = p.set.docs[2].workload;
                CHECK(p.set.docs[2].kind == MANIFEST_KIND_MICROVM);
                CHECK(p.set.docs[2].index == 4);
                CHECK(vm->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM);
                CHECK_STR_EQ(vm->accel, "tcg");
                CHECK(vm->disk_bytes == 2ULL << 30);
        }
        parsed_free(&p);

        parse(&p, "kind: MicroVM\nname: vm1\nimage: x\n");
        CHECK(p.r == 0);
        if (p.set.n == 1)
                CHECK_STR_EQ(p.set.docs[0].workload->accel, "auto");
        parsed_free(&p);

        parse(&p, "");
        CHECK(p.r == 0 && p.set.n == 0);
        parsed_free(&p);
        parse(&p, "# nothing\n---\n---\n");
        CHECK(p.r == 0 && p.set.n == 0);
        parsed_free(&p);
}

TEST(env_forms)
{
        struct parsed p;
        parse(&p, HDR "env:\n  - {name: A, value: \"1\"}\n  - name: B\n");
        CHECK(p.r == 0);
        if (p.set.n == 1) {
                const Capsule__V1__WorkloadSpec *w = p.set.docs[0].workload;
                CHECK(w->n_env == 2);
                CHECK_STR_EQ(w->env[0]->key, "A");
                CHECK_STR_EQ(w->env[0]->value, "1");
                CHECK_STR_EQ(w->env[1]->key, "B");
                CHECK_STR_EQ(w->env[1]->value, "");
        }
        parsed_free(&p);

        EXPECT_ERROR(
            HDR "env: {\"A=B\": x}\n",
            "t.yaml: document 1 (line 4): env: variable name \"A=B\" must not contain '='");
        EXPECT_ERROR(HDR "env: {\"\": x}\n",
                     "t.yaml: document 1 (line 4): env: empty variable name");
        EXPECT_ERROR(HDR "env:\n  - {name: \"\", value: x}\n",
                     "document 1 (line 5): env[0]: empty variable name");
        EXPECT_ERROR(HDR "env:\n  - {value: x}\n", "env[0].name: required field is missing");
        EXPECT_ERROR(HDR "env:\n  - {name: A, valu: x}\n",
                     "env[0].valu: unknown field (did you mean \"value\"?)");
        EXPECT_ERROR(HDR "env:\n  - {name: A}\n  - {name: A}\n",
                     "(line 6): env[1]: duplicate variable \"A\"");
        EXPECT_ERROR(HDR "env: {A: {b: c}}\n", "env.A: expected a string, got a mapping");
        EXPECT_ERROR(HDR "env: {A: }\n", "env.A: expected a string, got null");
        EXPECT_ERROR(HDR "env: [a, b]\n",
                     "env[0]: expected a mapping {name, value, secret}, got a string");
        EXPECT_ERROR(HDR "env: x\n", "env: expected a mapping (NAME: value) or a list");
}

/* `secret: true` on an env list entry: parsed into secret_env, validated, normalised, rendered
 * back (list form), redacted on request; "<redacted>" itself is refused as a value. */
TEST(secret_env)
{
        struct parsed p;
        parse(&p, HDR "env:\n  - {name: TOKEN, value: s3cr3t, secret: true}\n"
                      "  - {name: A, value: \"1\", secret: false}\n"
                      "  - {name: KEY, value: k, secret: true}\n");
        CHECK(p.r == 0);
        if (p.set.n == 1) {
                Capsule__V1__WorkloadSpec *w = p.set.docs[0].workload;
                CHECK(w->n_env == 3);
                CHECK(w->n_secret_env == 2);
                if (w->n_secret_env == 2) { /* normalised: sorted */
                        CHECK_STR_EQ(w->secret_env[0], "KEY");
                        CHECK_STR_EQ(w->secret_env[1], "TOKEN");
                }
                CHECK(manifest_env_is_secret(w, "TOKEN"));
                CHECK(!manifest_env_is_secret(w, "A"));
                char *y = manifest_workload_to_yaml(w);
                CHECK_STR_EQ(y, "kind: Container\n"
                                "name: web\n"
                                "image: capsule.local/busybox:latest\n"
                                "env:\n"
                                "- {name: A, value: \"1\"}\n"
                                "- {name: KEY, value: k, secret: true}\n"
                                "- {name: TOKEN, value: s3cr3t, secret: true}\n"
                                "restart: always\n"
                                "pullPolicy: IfNotPresent\n");
                /* the rendering parses back to the same spec */
                struct parsed q;
                parse(&q, y);
                CHECK(q.r == 0 && q.set.n == 1);
                if (q.set.n == 1)
                        CHECK(manifest_workload_equal(w, q.set.docs[0].workload) == 1);
                parsed_free(&q);
                free(y);

                /* a secret marker is part of the spec: the same values without it differ */
                Capsule__V1__WorkloadSpec *plain = manifest_workload_copy(w);
                CHECK(plain != NULL);
                if (plain) {
                        plain->n_secret_env = 0;
                        CHECK(manifest_workload_equal(w, plain) == 0);
                        plain->n_secret_env = 2;
                        protobuf_c_message_free_unpacked(&plain->base, NULL);
                }

                Capsule__V1__WorkloadSpec *r = manifest_workload_copy(w);
                CHECK(r != NULL && manifest_workload_redact(r, false) == 0);
                if (r) {
                        CHECK_STR_EQ(r->env[0]->value, "1");
                        CHECK_STR_EQ(r->env[1]->value, "<redacted>");
                        CHECK_STR_EQ(r->env[2]->value, "<redacted>");
                        CHECK(manifest_workload_redact(r, true) == 0);
                        CHECK_STR_EQ(r->env[0]->value, "<redacted>");
                        protobuf_c_message_free_unpacked(&r->base, NULL);
                }
                CHECK_STR_EQ(w->env[2]->value, "s3cr3t"); /* the copy was redacted, not w */
        }
        parsed_free(&p);

        EXPECT_ERROR(HDR "env:\n  - {name: A, value: x, secret: yes please}\n",
                     "(line 5): env[0].secret: expected true or false, got a string");
        EXPECT_ERROR(HDR "env:\n  - {name: A, value: x, secret: [true]}\n",
                     "env[0].secret: expected true or false");
        EXPECT_ERROR(HDR "env:\n  - {name: A, value: x, secrte: true}\n",
                     "env[0].secrte: unknown field (did you mean \"secret\"?)");
        EXPECT_ERROR(HDR "env:\n  - {name: A, value: x}\n  - {name: B, value: \"<redacted>\", "
                         "secret: true}\n",
                     "(line 6): env[1]: value of \"B\" is \"<redacted>\", what the API shows in "
                     "place of a secret; write the real value");
        EXPECT_ERROR(HDR "env: {A: \"<redacted>\"}\n", "env: value of \"A\" is \"<redacted>\"");
        /* a duplicate secret variable is reported once, as a duplicate variable */
        parse(&p, HDR "env:\n  - {name: A, value: x, secret: true}\n"
                      "  - {name: A, value: y, secret: true}\n");
        CHECK(p.r == -EINVAL && manifest_errors_count(&p.errs) == 1);
        parsed_free(&p);

        /* over gRPC secret_env may name anything: it must name env keys, once each */
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        Capsule__V1__WorkloadSpec__EnvEntry e = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT;
        Capsule__V1__WorkloadSpec__EnvEntry *env[] = {&e};
        char *names[] = {"A", "NOPE", "A"};
        e.key = "A";
        e.value = "v";
        w.name = "web";
        w.image = "x";
        w.n_env = 1;
        w.env = env;
        w.n_secret_env = 3;
        w.secret_env = names;
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        CHECK(manifest_workload_validate(&w, "apply", &errs) == -EINVAL);
        char *t = manifest_errors_join(&errs, "|");
        CHECK_STR_EQ(t, "apply: env: secret_env[1]: \"NOPE\" is not a variable in env|"
                        "apply: env: secret_env[2]: \"A\" is listed twice");
        free(t);
        manifest_errors_free(&errs);
        w.n_secret_env = 1;
        manifest_errors_init(&errs);
        CHECK(manifest_workload_validate(&w, "apply", &errs) == 0);
        manifest_errors_free(&errs);
}

TEST(port_forms)
{
        struct parsed p;
        parse(&p, HDR "ports:\n"
                      "  - {host: 8080, port: 80}\n"
                      "  - {host: 53, port: 53, protocol: UDP, hostIP: 10.0.0.1}\n"
                      "  - \"[::1]:8443:443/tcp\"\n"
                      "  - \"10.0.0.2:53:53/udp\"\n");
        CHECK(p.r == 0);
        if (p.set.n == 1) {
                const Capsule__V1__WorkloadSpec *w = p.set.docs[0].workload;
                CHECK(w->n_ports == 4);
                CHECK(w->ports[0]->host_port == 8080 && w->ports[0]->workload_port == 80);
                CHECK_STR_EQ(w->ports[0]->protocol, "tcp");
                CHECK_STR_EQ(w->ports[1]->protocol, "udp");
                CHECK_STR_EQ(w->ports[1]->host_ip, "10.0.0.1");
                CHECK_STR_EQ(w->ports[2]->host_ip, "::1");
                CHECK(w->ports[2]->host_port == 8443);
        }
        parsed_free(&p);

        EXPECT_ERROR(HDR "ports: [\"8080:80\", \"80800:80\"]\n",
                     "t.yaml: document 1 (line 4): ports[1]: \"80800:80\": host port 80800 out of "
                     "range 1-65535");
        EXPECT_ERROR(HDR "ports: [\"8080:0\"]\n",
                     "ports[0]: \"8080:0\": port 0 out of range 1-65535");
        EXPECT_ERROR(HDR "ports: [\"8080\"]\n",
                     "ports[0]: \"8080\": expected HOST:PORT[/tcp|udp] or IP:HOST:PORT[/tcp|udp]");
        EXPECT_ERROR(HDR "ports: [\"a:80\"]\n", "ports[0]: \"a:80\": expected HOST:PORT");
        EXPECT_ERROR(HDR "ports: [\"80:80/sctp\"]\n",
                     "ports[0]: \"80:80/sctp\": unknown protocol \"sctp\" (expected tcp or udp)");
        EXPECT_ERROR(HDR "ports: [\"1.2.3:80:80\"]\n",
                     "ports[0]: \"1.2.3:80:80\": \"1.2.3\" is not an IPv4 address");
        EXPECT_ERROR(HDR "ports: [{host: 70000, port: 80}]\n",
                     "(line 4): ports[0].host: host port 70000 out of range 1-65535");
        EXPECT_ERROR(HDR "ports: [{host: \"8080\", port: 80}]\n",
                     "ports[0].host: expected a number, got a string");
        EXPECT_ERROR(HDR "ports: [{port: 80}]\n", "ports[0].host: required field is missing");
        EXPECT_ERROR(HDR "ports: [{host: 1, port: 80, protocol: icmp}]\n",
                     "ports[0].protocol: \"icmp\": expected tcp or udp");
        EXPECT_ERROR(HDR "ports: [{host: 1, port: 80, hostIP: nope}]\n",
                     "ports[0].hostIP: \"nope\": not an IP address");
        EXPECT_ERROR(HDR "ports: \"80:80\"\n", "ports: expected a list, got a string");
        /* duplicate host port in one workload: same protocol, overlapping address */
        EXPECT_ERROR(HDR "ports:\n  - \"8080:80\"\n  - \"8080:81/tcp\"\n",
                     "t.yaml: document 1 (line 6): ports[1]: host port 8080/tcp is already used by "
                     "ports[0]");
        EXPECT_ERROR(HDR "ports:\n  - \"8080:80\"\n  - \"127.0.0.1:8080:81\"\n",
                     "ports[1]: host port 8080/tcp is already used by ports[0]");
        parse(&p, HDR "ports: [\"8080:80/tcp\", \"8080:80/udp\", \"10.0.0.1:9:9\", "
                      "\"10.0.0.2:9:9\"]\n");
        CHECK(p.r == 0);
        parsed_free(&p);
}

TEST(cross_document_checks)
{
        EXPECT_ERROR(HDR "ports: [\"8080:80\"]\n---\n"
                         "kind: MicroVM\nname: vm\nimage: x\nports: [\"1:1\", \"8080:80\"]\n",
                     "t.yaml: document 2 (line 9): ports[1]: host port 8080/tcp is already used "
                     "by workload \"web\" (t.yaml document 1)");
        EXPECT_ERROR(HDR "---\n" HDR,
                     "t.yaml: document 2 (line 5): name: workload \"web\" is already declared in "
                     "t.yaml document 1 (line 1)");
        EXPECT_ERROR(HDR "---\nkind: MicroVM\nname: web\nimage: x\n",
                     "name: workload \"web\" is already declared");
        EXPECT_ERROR("kind: Volume\nname: v\nsize: 1Gi\n---\nkind: Volume\nname: v\nsize: 2Gi\n",
                     "document 2 (line 5): name: volume \"v\" is already declared");
        struct parsed p;
        /* a volume and a workload may share a name; different addresses do not clash */
        parse(&p, HDR "ports: [\"10.0.0.1:80:80\"]\n---\nkind: Volume\nname: web\nsize: 1Gi\n---\n"
                      "kind: Container\nname: b\nimage: x\nports: [\"10.0.0.2:80:80\"]\n");
        CHECK(p.r == 0);
        parsed_free(&p);
        EXPECT_ERROR(HDR "ports: [\"10.0.0.1:80:80\"]\n---\n"
                         "kind: Container\nname: b\nimage: x\nports: [\"80:80\"]\n",
                     "document 2 (line 9): ports[0]: host port 80/tcp is already used by workload "
                     "\"web\"");
}

static bool exists_only_data(const char *name, void *ud)
{
        (*(int *)ud)++;
        return strcmp(name, "data") == 0;
}

TEST(check_mounts)
{
        struct parsed p;
        parse(&p,
              HDR "mounts:\n  - {volume: site, path: /www}\n  - {volume: data, path: /data}\n"
                  "  - {volume: gone, path: /gone}\n---\nkind: Volume\nname: site\nsize: 1Gi\n");
        CHECK(p.r == 0);
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        int calls = 0;
        CHECK(manifest_check_mounts(&p.set, exists_only_data, &calls, &errs) == -EINVAL);
        CHECK(calls == 2);
        CHECK(manifest_errors_count(&errs) == 1);
        if (errs.n == 1)
                CHECK_STR_EQ(errs.msgs[0], "t.yaml: document 1 (line 7): mounts[2].volume: volume "
                                           "\"gone\" does not exist and is not declared in this "
                                           "manifest");
        manifest_errors_free(&errs);
        manifest_errors_init(&errs);
        CHECK(manifest_check_mounts(&p.set, NULL, NULL, &errs) == -EINVAL);
        CHECK(manifest_errors_count(&errs) == 2);
        manifest_errors_free(&errs);
        parsed_free(&p);
}

TEST(mount_errors)
{
        EXPECT_ERROR(HDR "mounts: [{volume: site, path: data}]\n",
                     "(line 4): mounts[0].path: \"data\": must be an absolute path");
        EXPECT_ERROR(HDR "mounts: [{volume: site, path: /a/../etc}]\n",
                     "mounts[0].path: \"/a/../etc\": must not contain \"..\"");
        EXPECT_ERROR(HDR "mounts: [{volume: site, path: /}]\n",
                     "mounts[0].path: \"/\": must not be /");
        EXPECT_ERROR(HDR "mounts:\n  - {volume: a, path: /data}\n  - {volume: b, path: /data/}\n",
                     "(line 6): mounts[1].path: \"/data/\" is already mounted by mounts[0]");
        EXPECT_ERROR(HDR "mounts: [{volume: Site_1, path: /d}]\n",
                     "mounts[0].volume \"Site_1\": must be a DNS label");
        EXPECT_ERROR(HDR "mounts: [{path: /d}]\n", "mounts[0].volume: required field is missing");
        EXPECT_ERROR(HDR "mounts: [{volume: a, path: /d, readOnly: yes}]\n",
                     "mounts[0].readOnly: expected true or false, got a string");
        EXPECT_ERROR(HDR "mounts: [{volume: a, path: /d, readonly: true}]\n",
                     "mounts[0].readonly: unknown field (did you mean \"readOnly\"?)");
        EXPECT_ERROR(HDR "mounts: [/data]\n",
                     "mounts[0]: expected a mapping {volume, path, readOnly}, got a string");
        /* "..." as a name is fine, only a ".." component is refused */
        struct parsed p;
        parse(&p, HDR "mounts: [{volume: a, path: /a..b/c}]\n");
        CHECK(p.r == 0);
        parsed_free(&p);
}

TEST(field_errors)
{
        EXPECT_ERROR(HDR "imagePullPolicy: Always\n",
                     "t.yaml: document 1 (line 4): imagePullPolicy: unknown field");
        EXPECT_ERROR(HDR "Name: x\n", "Name: unknown field (did you mean \"name\"?)");
        EXPECT_ERROR("kind: Container\nname: web\nimage: {a: b}\n",
                     "t.yaml: document 1 (line 3): image: expected a string, got a mapping");
        EXPECT_ERROR("kind: Container\nimage: x\n",
                     "t.yaml: document 1 (line 1): name: required field is missing");
        EXPECT_ERROR("kind: Container\nname: web\n", "image: required field is missing");
        EXPECT_ERROR("kind: Container\nname: Web_1\nimage: x\n",
                     "t.yaml: document 1 (line 2): name \"Web_1\": must be a DNS label");
        EXPECT_ERROR("kind: Container\nname: web\nimage: \"a b\"\n",
                     "image: \"a b\": not an image reference");
        EXPECT_ERROR("name: web\nimage: x\n",
                     "document 1 (line 1): kind: required field is missing (expected Container, "
                     "MicroVM or Volume)");
        EXPECT_ERROR("kind: Pod\nname: web\n",
                     "kind: \"Pod\": unknown kind (expected Container, MicroVM or Volume)");
        EXPECT_ERROR("kind: container\nname: web\n", "kind: \"container\": unknown kind");
        EXPECT_ERROR(HDR "accel: kvm\n", "(line 4): accel: only valid for kind MicroVM");
        EXPECT_ERROR(HDR "disk: 1Gi\n", "(line 4): disk: only valid for kind MicroVM");
        EXPECT_ERROR("kind: MicroVM\nname: v\nimage: x\naccel: xen\n",
                     "accel: \"xen\": expected auto, kvm or tcg");
        EXPECT_ERROR("kind: MicroVM\nname: v\nimage: x\ndisk: 0\n",
                     "disk: \"0\": must be greater than 0");
        EXPECT_ERROR(HDR "restart: sometimes\n",
                     "restart: \"sometimes\": expected always, on-failure or never");
        EXPECT_ERROR(HDR "pullPolicy: ifnotpresent\n",
                     "pullPolicy: \"ifnotpresent\": expected IfNotPresent, Always or Never");
        EXPECT_ERROR(HDR "privileged: \"true\"\n",
                     "privileged: expected true or false, got a string");
        EXPECT_ERROR(
            HDR "command: nginx\n",
            "command: expected a list of strings, got a string (write [\"...\", \"...\"])");
        EXPECT_ERROR(HDR "args: [a, [b]]\n", "args[1]: expected a string, got a list");
        EXPECT_ERROR(HDR "workingDir: srv\n", "workingDir: \"srv\": must be an absolute path");
        EXPECT_ERROR(HDR "name: again\n", "(line 4): name: duplicate key (first at line 2)");
        EXPECT_ERROR(HDR "command: [\"a\\0b\"]\n", "command[0]: must not contain NUL characters");
        EXPECT_ERROR("- a\n- b\n",
                     "document 1 (line 1): a document must be a mapping of fields (kind, name, "
                     "...), got a list");
        EXPECT_ERROR("kind: Volume\nname: v\n", "size: required field is missing");
        EXPECT_ERROR("kind: Volume\nname: v\nsize: 1Gi\nimage: x\n",
                     "(line 4): image: unknown field");
        EXPECT_ERROR("kind: Volume\nname: V\nsize: 1Gi\n", "name \"V\": must be a DNS label");
        EXPECT_ERROR(HDR "? [a]\n: b\n", "keys must be strings, got a list");
}

TEST(resource_errors)
{
        EXPECT_ERROR(
            HDR "resources: {memory: 12Qi}\n",
            "t.yaml: document 1 (line 4): resources.memory: \"12Qi\": unknown unit \"Qi\"");
        EXPECT_ERROR(HDR "resources: {memory: -1Gi}\n",
                     "resources.memory: \"-1Gi\": must not be negative");
        EXPECT_ERROR(HDR "resources: {memory: 0.3}\n",
                     "resources.memory: \"0.3\": not a whole number of bytes");
        EXPECT_ERROR(HDR "resources: {memory: 99999999999Ei}\n",
                     "resources.memory: \"99999999999Ei\": too large");
        EXPECT_ERROR(HDR "resources: {cpus: 0.0001}\n",
                     "resources.cpus: \"0.0001\": at most 3 decimals (millicores)");
        EXPECT_ERROR(HDR "resources: {cpus: 5000}\n",
                     "resources.cpus: \"5000\": more than 1024 CPUs");
        EXPECT_ERROR(HDR "resources: {cpus: 1.5m}\n", "resources.cpus: \"1.5m\": unknown unit");
        EXPECT_ERROR(HDR "resources: {cpus: [1]}\n",
                     "resources.cpus: expected a quantity, got a list");
        EXPECT_ERROR(HDR "resources: {cpu: 1}\n",
                     "resources.cpu: unknown field (did you mean \"cpus\"?)");
        EXPECT_ERROR(HDR "resources: 1\n",
                     "resources: expected a mapping {cpus, memory}, got a number");
        struct parsed p;
        parse(&p, HDR "resources: {cpus: \"500m\", memory: 268435456}\n");
        CHECK(p.r == 0);
        if (p.set.n == 1) {
                CHECK(p.set.docs[0].workload->resources->cpus == 0.5);
                CHECK(p.set.docs[0].workload->resources->memory_bytes == 268435456);
        }
        parsed_free(&p);
}

TEST(syntax_and_limits)
{
        EXPECT_ERROR(HDR "ports: [\"80:80\"\n",
                     "t.yaml: document 1 (line 5, column 1): YAML syntax error: did not find "
                     "expected ',' or ']'");
        EXPECT_ERROR(HDR "---\nkind: Container\n  name: x\n",
                     "t.yaml: document 2 (line 6, column 7): YAML syntax error:");
        EXPECT_ERROR("kind: Container\nname: &n web\nimage: *n\n",
                     "document 1 (line 3): YAML aliases (*n) are not supported");
        /* billion laughs: refused at the first alias, nothing expanded */
        EXPECT_ERROR("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c]\n",
                     "YAML aliases (*a) are not supported");
        char deep[200] = "kind: Container\nx: ";
        for (int i = 0; i < 40; i++)
                strcat(deep, "[");
        EXPECT_ERROR(deep, "nested more than 32 levels deep");

        struct parsed p;
        size_t big = MANIFEST_MAX_BYTES + 1;
        char *buf = malloc(big);
        memset(buf, '#', big);
        memset(&p, 0, sizeof(p));
        manifest_errors_init(&p.errs);
        CHECK(manifest_parse("big.yaml", buf, big, &p.set, &p.errs) == -E2BIG);
        CHECK(p.errs.n == 1 && strstr(p.errs.msgs[0], "big.yaml: larger than the 1048576-byte limit"));
        manifest_errors_free(&p.errs);
        free(buf);

        /* 1001 tiny documents */
        size_t cap = 1002 * 10, len = 0;
        buf = malloc(cap);
        for (int i = 0; i < 1001; i++)
                len += (size_t)snprintf(buf + len, cap - len, "---\n~\n");
        memset(&p, 0, sizeof(p));
        manifest_errors_init(&p.errs);
        CHECK(manifest_parse("many.yaml", buf, len, &p.set, &p.errs) == -E2BIG);
        p.text = manifest_errors_join(&p.errs, "\n");
        CHECK_CONTAINS(p.text, "many.yaml: document 1001 (line 2001): more than 1000 documents");
        parsed_free(&p);
        free(buf);
}

TEST(collects_all_errors)
{
        struct parsed p;
        parse(&p, "kind: Container\nname: Bad_Name\nimage: {x: 1}\nbogus: 1\n"
                  "ports: [\"0:80\", \"x\"]\nmounts: [{volume: v, path: rel}]\n"
                  "resources: {memory: 1Q}\naccel: kvm\n---\nkind: Nope\n---\n"
                  "kind: Volume\nname: v\nsize: lots\n");
        CHECK(p.r == -EINVAL);
        CHECK(p.set.n == 0);
        CHECK_CONTAINS(p.text, "document 1 (line 2): name \"Bad_Name\"");
        CHECK_CONTAINS(p.text, "document 1 (line 3): image: expected a string");
        CHECK_CONTAINS(p.text, "document 1 (line 4): bogus: unknown field");
        CHECK_CONTAINS(p.text, "document 1 (line 5): ports[0]: \"0:80\": host port 0 out of range");
        CHECK_CONTAINS(p.text, "document 1 (line 5): ports[1]: \"x\": expected HOST:PORT");
        CHECK_CONTAINS(p.text, "document 1 (line 6): mounts[0].path: \"rel\"");
        CHECK_CONTAINS(p.text, "document 1 (line 7): resources.memory: \"1Q\": unknown unit");
        CHECK_CONTAINS(p.text, "document 1 (line 8): accel: only valid for kind MicroVM");
        CHECK_CONTAINS(p.text, "document 2 (line 10): kind: \"Nope\": unknown kind");
        CHECK_CONTAINS(p.text, "document 3 (line 14): size: \"lots\": not a number");
        CHECK(manifest_errors_count(&p.errs) == 10);
        /* within a document, in line order */
        CHECK(p.errs.n == 10 && strstr(p.errs.msgs[0], "(line 2): name") &&
              strstr(p.errs.msgs[7], "(line 8): accel"));
        parsed_free(&p);

        /* more errors than kept: counted and summarised */
        char *buf = malloc(200 * 40), *q = buf;
        q += sprintf(q, HDR "ports:\n");
        for (int i = 0; i < 150; i++)
                q += sprintf(q, "  - \"0:%d\"\n", i + 1);
        parse(&p, buf);
        CHECK(manifest_errors_count(&p.errs) == 150);
        CHECK(p.errs.n == MANIFEST_MAX_ERRORS);
        CHECK_CONTAINS(p.text, "... and 50 more errors");
        parsed_free(&p);
        free(buf);
}

TEST(quantities)
{
        struct {
                const char *in;
                uint64_t bytes;
                const char *canon;
        } ok[] = {
            {"0", 0, "0"},
            {"4096", 4096, "4Ki"},
            {"1000", 1000, "1k"},
            {"512Ki", 512 * 1024, "512Ki"},
            {"256Mi", 256ULL << 20, "256Mi"},
            {"1Gi", 1ULL << 30, "1Gi"},
            {"1.5Gi", 3ULL << 29, "1536Mi"},
            {"1G", 1000000000ULL, "1G"},
            {"1M", 1000000ULL, "1M"},
            {"2K", 2000, "2k"},
            {"1001", 1001, "1001"},
            {"16Ei", 0, NULL}, /* overflow: checked below */
            {"15Ei", 15ULL << 60, "15Ei"},
            {"18446744073709551615", UINT64_MAX, "18446744073709551615"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
                uint64_t v = 0;
                struct cap_error e = {0};
                char buf[QUANTITY_BUF_SIZE];
                int r = quantity_parse_bytes(ok[i].in, &v, &e);
                if (!ok[i].canon) {
                        CHECK(r == -EINVAL);
                        CHECK_CONTAINS(e.msg, "too large");
                        continue;
                }
                CHECK(r == 0);
                CHECK(v == ok[i].bytes);
                CHECK_STR_EQ(quantity_format_bytes(v, buf, sizeof(buf)), ok[i].canon);
                uint64_t back = 1;
                CHECK(quantity_parse_bytes(buf, &back, &e) == 0 && back == v);
        }
        const char *bad[] = {"",   "Gi",   "1 Gi", " 1",  "1gi",  "1.Gi",
                             "+1", "0x10", "1e9",  "1.5", "1Gib", "99999999999999999999999"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                uint64_t v;
                struct cap_error e = {0};
                CHECK(manifest_parse_quantity(bad[i], &v, &e) == -EINVAL);
                CHECK(e.msg[0] != '\0');
        }
        struct {
                const char *in;
                double cpus;
                const char *canon;
        } cpus[] = {{"1", 1, "1"},          {"0.5", 0.5, "0.5"},
                    {"500m", 0.5, "0.5"},   {"2.125", 2.125, "2.125"},
                    {"0.25", 0.25, "0.25"}, {"0", 0, "0"},
                    {"1024", 1024, "1024"}, {"1m", 0.001, "0.001"}};
        for (size_t i = 0; i < ARRAY_SIZE(cpus); i++) {
                double v = -1;
                struct cap_error e = {0};
                char buf[QUANTITY_BUF_SIZE];
                CHECK(manifest_parse_cpus(cpus[i].in, &v, &e) == 0);
                CHECK(v == cpus[i].cpus);
                CHECK_STR_EQ(quantity_format_cpus(v, buf, sizeof(buf)), cpus[i].canon);
        }
        const char *badc[] = {"", "-1", "1.0001", "1025", "1.5m", "m", "1cpu", "0x1", "1e3"};
        for (size_t i = 0; i < ARRAY_SIZE(badc); i++) {
                double v;
                struct cap_error e = {0};
                CHECK(quantity_parse_cpus(badc[i], &v, &e) == -EINVAL);
        }
}

/* YAML -> spec -> YAML -> spec: equal specs, and the canonical YAML is a fixed point. */
static void check_round_trip(const char *yaml)
{
        struct parsed a, b;
        parse(&a, yaml);
        CHECK(a.r == 0);
        for (size_t i = 0; i < a.set.n; i++) {
                if (!a.set.docs[i].workload)
                        continue;
                char *y1 = manifest_workload_to_yaml(a.set.docs[i].workload);
                CHECK(y1 != NULL);
                parse(&b, y1);
                CHECK(b.r == 0);
                CHECK(b.set.n == 1);
                if (b.set.n == 1) {
                        CHECK(manifest_workload_equal(a.set.docs[i].workload,
                                                      b.set.docs[0].workload) == 1);
                        char *y2 = manifest_workload_to_yaml(b.set.docs[0].workload);
                        CHECK_STR_EQ(y1, y2);
                        free(y2);
                }
                parsed_free(&b);
                free(y1);
        }
        parsed_free(&a);
}

TEST(round_trip)
{
        check_round_trip(HDR);
        check_round_trip("kind: Container\nname: web\nimage: registry.lan/nginx:1.25\n"
                         "command: [\"nginx\", \"true\", \"\", \"- x\", \"a: b\", \"#c\"]\n"
                         "args: [\"-g\", \"daemon off;\", \"123\", \"null\", \"multi\\nline\"]\n"
                         "env: {TZ: Europe/Paris, \"null\": \"yes\", EMPTY: \"\", N: \"1.5\", "
                         "U: \"é\\t\\u0001\"}\n"
                         "ports: [\"8080:80/tcp\", \"127.0.0.1:5353:53/udp\", \"[::1]:1:2\"]\n"
                         "mounts: [{volume: site, path: /www, readOnly: true}, "
                         "{volume: b, path: \"/with space\"}]\n"
                         "restart: never\nresources: {cpus: 2.125, memory: 1G}\n"
                         "pullPolicy: Never\nworkingDir: /srv\nuser: nobody\nprivileged: true\n");
        check_round_trip("kind: MicroVM\nname: vm\nimage: x\naccel: kvm\ndisk: 10Gi\n"
                         "resources: {memory: 1000001}\n");

        struct parsed p;
        parse(&p, "kind: Container\nname: web\nimage: x\nenv: {B: \"2\", A: \"1\"}\n"
                  "ports: [\"8080:80\"]\nresources: {cpus: 1, memory: 256Mi}\n");
        CHECK(p.r == 0);
        if (p.set.n == 1) {
                char *y = manifest_workload_to_yaml(p.set.docs[0].workload);
                CHECK_STR_EQ(y, "kind: Container\n"
                                "name: web\n"
                                "image: x\n"
                                "env:\n"
                                "  A: \"1\"\n"
                                "  B: \"2\"\n"
                                "ports:\n"
                                "- \"8080:80/tcp\"\n"
                                "restart: always\n"
                                "resources:\n"
                                "  cpus: 1\n"
                                "  memory: 256Mi\n"
                                "pullPolicy: IfNotPresent\n");
                free(y);
        }
        parsed_free(&p);
        char *v = manifest_volume_to_yaml("site", 1ULL << 30);
        CHECK_STR_EQ(v, "kind: Volume\nname: site\nsize: 1Gi\n");
        parse(&p, v);
        CHECK(p.r == 0 && p.set.n == 1 && p.set.docs[0].volume_size == 1ULL << 30);
        parsed_free(&p);
        free(v);
}

TEST(normalised_equality)
{
        Capsule__V1__WorkloadSpec a = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        a.name = "web";
        a.image = "x";
        Capsule__V1__WorkloadSpec *b = manifest_workload_copy(&a);
        CHECK(b != NULL);
        b->restart = CAPSULE__V1__RESTART_POLICY__ALWAYS;
        b->kind = CAPSULE__V1__WORKLOAD_KIND__CONTAINER;
        b->pull_policy = CAPSULE__V1__PULL_POLICY__IF_NOT_PRESENT;
        CHECK(manifest_workload_equal(&a, b) == 1);
        b->restart = CAPSULE__V1__RESTART_POLICY__NEVER;
        CHECK(manifest_workload_equal(&a, b) == 0);
        b->restart = CAPSULE__V1__RESTART_POLICY__ALWAYS;

        /* env order, protocol case and empty resources do not matter */
        Capsule__V1__WorkloadSpec__EnvEntry e1 = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT,
                                            e2 = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT;
        e1.key = "A";
        e1.value = "1";
        e2.key = "B";
        e2.value = "2";
        Capsule__V1__WorkloadSpec__EnvEntry *env_ab[] = {&e1, &e2}, *env_ba[] = {&e2, &e1};
        Capsule__V1__PortMapping pm = CAPSULE__V1__PORT_MAPPING__INIT;
        pm.host_port = 80;
        pm.workload_port = 80;
        Capsule__V1__PortMapping *ports[] = {&pm};
        Capsule__V1__Resources res = CAPSULE__V1__RESOURCES__INIT;
        Capsule__V1__WorkloadSpec c = a, d = a;
        c.n_env = d.n_env = 2;
        c.env = env_ab;
        d.env = env_ba;
        c.n_ports = 1;
        c.ports = ports;
        c.resources = &res;
        Capsule__V1__WorkloadSpec *d2 = manifest_workload_copy(&d);
        CHECK(d2 != NULL);
        if (d2) {
                d2->n_ports = 1;
                d2->ports = malloc(sizeof(*d2->ports));
                d2->ports[0] = malloc(sizeof(*d2->ports[0]));
                capsule__v1__port_mapping__init(d2->ports[0]);
                d2->ports[0]->host_port = 80;
                d2->ports[0]->workload_port = 80;
                d2->ports[0]->protocol = strdup("TCP");
                CHECK(manifest_workload_equal(&c, d2) == 1);
                d2->ports[0]->workload_port = 81;
                CHECK(manifest_workload_equal(&c, d2) == 0);
                protobuf_c_message_free_unpacked(&d2->base, NULL);
        }
        protobuf_c_message_free_unpacked(&b->base, NULL);

        CHECK_STR_EQ(manifest_restart_name(CAPSULE__V1__RESTART_POLICY__RESTART_POLICY_UNSPECIFIED),
                     "always");
        CHECK_STR_EQ(manifest_restart_name((Capsule__V1__RestartPolicy)42), "unknown");
        CHECK_STR_EQ(manifest_pull_policy_name(CAPSULE__V1__PULL_POLICY__PULL_NEVER), "Never");
        CHECK_STR_EQ(manifest_workload_kind_name(CAPSULE__V1__WORKLOAD_KIND__MICROVM), "MicroVM");
        CHECK_STR_EQ(manifest_kind_name(MANIFEST_KIND_VOLUME), "Volume");
}

TEST(validate_grpc_spec)
{
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        Capsule__V1__PortMapping pm = CAPSULE__V1__PORT_MAPPING__INIT;
        Capsule__V1__Mount m = CAPSULE__V1__MOUNT__INIT;
        Capsule__V1__PortMapping *ports[] = {&pm};
        Capsule__V1__Mount *mounts[] = {&m};
        w.name = "web";
        w.image = "x";
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        CHECK(manifest_workload_validate(&w, "apply", &errs) == 0);
        CHECK(errs.n == 0);
        w.n_ports = 1;
        w.ports = ports;
        w.n_mounts = 1;
        w.mounts = mounts;
        m.volume = "v";
        m.path = "rel";
        w.accel = "kvm";
        w.restart = 7;
        CHECK(manifest_workload_validate(&w, "apply", &errs) == -EINVAL);
        char *t = manifest_errors_join(&errs, "\n");
        CHECK_CONTAINS(t, "apply: ports[0].host: host port 0 out of range 1-65535");
        CHECK_CONTAINS(t, "apply: ports[0].port: port 0 out of range 1-65535");
        CHECK_CONTAINS(t, "apply: mounts[0].path: \"rel\": must be an absolute path");
        CHECK_CONTAINS(t, "apply: accel: only valid for kind MicroVM");
        CHECK_CONTAINS(t, "apply: restart: unknown restart policy 7");
        free(t);
        manifest_errors_free(&errs);
        w = (Capsule__V1__WorkloadSpec)CAPSULE__V1__WORKLOAD_SPEC__INIT;
        manifest_errors_init(&errs);
        CHECK(manifest_workload_validate(&w, NULL, &errs) == -EINVAL);
        t = manifest_errors_join(&errs, "|");
        CHECK_STR_EQ(t, "name: required field is missing|image: required field is missing");
        free(t);
        manifest_errors_free(&errs);
}

/* Host ports the capsule itself listens on are refused, naming the field and the user. */
TEST(reserved_ports)
{
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        Capsule__V1__PortMapping a = CAPSULE__V1__PORT_MAPPING__INIT;
        Capsule__V1__PortMapping b = CAPSULE__V1__PORT_MAPPING__INIT;
        Capsule__V1__PortMapping c = CAPSULE__V1__PORT_MAPPING__INIT;
        Capsule__V1__PortMapping *ports[] = {&a, &b, &c};
        w.name = "web";
        w.image = "x";
        w.ports = ports;
        w.n_ports = 3;
        a.host_port = 8080;
        a.workload_port = 80;
        b.host_port = 50000;
        b.workload_port = 80;
        c.host_port = 9100;
        c.workload_port = 80;
        c.protocol = "TCP";
        const struct manifest_reserved_port res[] = {
            {50000, "tcp", "the capsule API"},
            {9100, "tcp", "the capsule's metrics endpoint"},
        };
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        CHECK(manifest_check_reserved_ports(&w, "web", res, 2, &errs) == -EINVAL);
        char *t = manifest_errors_join(&errs, "|");
        CHECK_STR_EQ(t, "web: ports[1].host: port 50000/tcp is used by the capsule API; choose "
                        "another host port|web: ports[2].host: port 9100/tcp is used by the "
                        "capsule's metrics endpoint; choose another host port");
        free(t);
        manifest_errors_free(&errs);
        /* another protocol on the same number does not clash; no reserved ports: nothing to say */
        b.protocol = "udp";
        c.host_port = 9101;
        manifest_errors_init(&errs);
        CHECK(manifest_check_reserved_ports(&w, "web", res, 2, &errs) == 0);
        CHECK(manifest_check_reserved_ports(&w, NULL, NULL, 0, &errs) == 0);
        CHECK(errs.n == 0);
        manifest_errors_free(&errs);
}

TEST(set_append)
{
        struct parsed a, b;
        parse(&a, HDR "ports: [\"80:80\"]\n");
        parse(&b, "kind: Container\nname: web\nimage: y\nports: [\"80:80\"]\n");
        CHECK(a.r == 0 && b.r == 0);
        CHECK(manifest_set_append(&a.set, &b.set) == 0);
        CHECK(a.set.n == 2 && b.set.n == 0);
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        CHECK(manifest_set_check(&a.set, &errs) == -EINVAL);
        char *t = manifest_errors_join(&errs, "\n");
        CHECK_CONTAINS(t, "name: workload \"web\" is already declared in t.yaml document 1");
        CHECK_CONTAINS(t, "ports[0]: host port 80/tcp is already used by workload \"web\"");
        free(t);
        manifest_errors_free(&errs);
        parsed_free(&a);
        parsed_free(&b);
}

TEST(examples)
{
        DIR *d = opendir(examples_dir);
        CHECK(d != NULL);
        if (!d)
                return;
        int files = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n < 6 || strcmp(de->d_name + n - 5, ".yaml") != 0)
                        continue;
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", examples_dir, de->d_name);
                struct manifest_set set = {0};
                struct manifest_errors errs;
                manifest_errors_init(&errs);
                int r = manifest_parse_file(path, &set, &errs);
                if (r < 0)
                        manifest_errors_print(&errs, stderr);
                CHECK(r == 0);
                CHECK(set.n > 0);
                CHECK(manifest_check_mounts(&set, NULL, NULL, &errs) == 0);
                for (size_t i = 0; i < set.n; i++)
                        if (set.docs[i].workload)
                                CHECK_STR_EQ(set.docs[i].workload->image,
                                             "capsule.local/busybox:latest");
                manifest_set_free(&set);
                manifest_errors_free(&errs);
                files++;
        }
        closedir(d);
        CHECK(files >= 3);

        struct manifest_set set;
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        CHECK(manifest_parse_file("/nonexistent/x.yaml", &set, &errs) == -ENOENT);
        CHECK(errs.n == 1 && strstr(errs.msgs[0], "/nonexistent/x.yaml: No such file"));
        manifest_errors_free(&errs);
}

int main(int argc, char **argv)
{
        if (argc > 1)
                examples_dir = argv[1];
        RUN(full_container);
        RUN(defaults_and_multidoc);
        RUN(env_forms);
        RUN(secret_env);
        RUN(port_forms);
        RUN(cross_document_checks);
        RUN(check_mounts);
        RUN(mount_errors);
        RUN(field_errors);
        RUN(resource_errors);
        RUN(syntax_and_limits);
        RUN(collects_all_errors);
        RUN(quantities);
        RUN(round_trip);
        RUN(normalised_equality);
        RUN(validate_grpc_spec);
        RUN(reserved_ports);
        RUN(set_append);
        RUN(examples);
        return test_summary();
}
