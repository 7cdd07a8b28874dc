/* Throwaway test PKI for the rpc tests and bench: runs the `openssl` CLI into a temporary
 * directory and loads the PEMs. A CA with a server certificate (SAN 127.0.0.1, localhost) and
 * two client certificates (O=capsule:admin CN=alice, O=capsule:reader CN=bob), plus a second,
 * unrelated CA with a client certificate (CN=mallory) that the server must refuse, and a client
 * certificate with two O attributes and RFC 2253 special characters in its CN (CN=eve, "the"
 * second). 
 * Header-only so that tests/unit/test-rpc.c and bench/rpc/ can share it. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rpc_test_pki {
        char dir[64];
        char *ca, *server_cert, *server_key, *admin_cert, *admin_key, *reader_cert, *reader_key,
            *other_cert, *other_key, *twoorg_cert, *twoorg_key;
};

static char *rpc_test_pki_read(const char *dir, const char *name)
{
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = calloc(1, 65536);
        size_t n = buf ? fread(buf, 1, 65535, f) : 0;
        fclose(f);
        if (buf && n == 0) {
                free(buf);
                buf = NULL;
        }
        return buf;
}

static const char rpc_test_pki_script[] =
    "set -e; cd \"$0\"\n"
    "key() { openssl ecparam -name prime256v1 -genkey -noout -out \"$1.key\"; }\n"
    "ca() { key $1; openssl req -x509 -new -key $1.key -subj \"/CN=$2\" -days 2 -out $1.crt; }\n"
    "leaf() { key $1; openssl req -new -key $1.key -subj \"$2\" -out $1.csr;\n"
    "  printf '%s\\n' \"$4\" > $1.ext;\n"
    "  openssl x509 -req -in $1.csr -CA $3.crt -CAkey $3.key -CAcreateserial -days 2 \\\n"
    "    -extfile $1.ext -out $1.crt 2>/dev/null; }\n"
    "ca ca 'Capsule Test CA'; ca otherca 'Other CA'\n"
    "leaf server /CN=capsule-server ca 'subjectAltName=IP:127.0.0.1,DNS:localhost'\n"
    "leaf admin '/O=capsule:admin/CN=alice' ca 'extendedKeyUsage=clientAuth'\n"
    "leaf reader '/O=capsule:reader/CN=bob' ca 'extendedKeyUsage=clientAuth'\n"
    "leaf other '/O=capsule:admin/CN=mallory' otherca 'extendedKeyUsage=clientAuth'\n"
    "leaf twoorg '/O=capsule:reader/O=capsule:admin/CN=eve, \"the\" second' ca "
    "'extendedKeyUsage=clientAuth'\n";

/* Returns 0 on success. */
static int rpc_test_pki_create(struct rpc_test_pki *p)
{
        memset(p, 0, sizeof(*p));
        snprintf(p->dir, sizeof(p->dir), "/tmp/capsule-rpc-pki.XXXXXX");
        if (!mkdtemp(p->dir))
                return -1;
        char cmd[sizeof(rpc_test_pki_script) + 128];
        snprintf(cmd, sizeof(cmd), "sh -c '%s' '%s' >/dev/null 2>&1", "eval \"$SCRIPT\"", p->dir);
        setenv("SCRIPT", rpc_test_pki_script, 1);
        int r = system(cmd);
        unsetenv("SCRIPT");
        if (r != 0)
                return -1;
        p->ca = rpc_test_pki_read(p->dir, "ca.crt");
        p->server_cert = rpc_test_pki_read(p->dir, "server.crt");
        p->server_key = rpc_test_pki_read(p->dir, "server.key");
        p->admin_cert = rpc_test_pki_read(p->dir, "admin.crt");
        p->admin_key = rpc_test_pki_read(p->dir, "admin.key");
        p->reader_cert = rpc_test_pki_read(p->dir, "reader.crt");
        p->reader_key = rpc_test_pki_read(p->dir, "reader.key");
        p->other_cert = rpc_test_pki_read(p->dir, "other.crt");
        p->other_key = rpc_test_pki_read(p->dir, "other.key");
        p->twoorg_cert = rpc_test_pki_read(p->dir, "twoorg.crt");
        p->twoorg_key = rpc_test_pki_read(p->dir, "twoorg.key");
        return p->ca && p->server_cert && p->server_key && p->admin_cert && p->admin_key &&
                       p->reader_cert && p->reader_key && p->other_cert && p->other_key && p->twoorg_cert && p->twoorg_key
                   ? 0
                   : -1;
}

static void rpc_test_pki_free(struct rpc_test_pki *p)
{
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
        if (p->dir[0] && system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", p->dir);
        free(p->ca);
        free(p->server_cert);
        free(p->server_key);
        free(p->admin_cert);
        free(p->admin_key);
        free(p->reader_cert);
        free(p->reader_key);
        free(p->other_cert);
        free(p->other_key);
        free(p->twoorg_cert);
        free(p->twoorg_key);
}
