/* The containerd content-store sink used by image push and pull. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "containerd/client.h"
#include "content.h"

#define CONTENT_BUF (1u << 20)

static void to_ctrd_labels(const struct blob_desc *d, struct ctrd_label *out)
{
        for (size_t i = 0; i < d->n_labels; i++)
                out[i] = (struct ctrd_label){d->labels[i].key, d->labels[i].value};
}

static int cs_begin(void *ud, const struct blob_desc *d, bool *exists, struct cap_error *err)
{
        struct content_sink *cs = ud;
        snprintf(cs->ref, sizeof(cs->ref), "capsule-import-%s-%s", cs->tag, d->digest);
        cs->len = 0;
        int r = ctrd_writer_open(cs->client, cs->ref, d->digest, (int64_t)d->size, &cs->writer,
                                 exists, err);
        if (r < 0)
                return cap_error_prefix(err, "store blob %s", d->digest);
        for (size_t i = 0; *exists && i < d->n_labels; i++)
                if (ctrd_content_set_label(cs->client, d->digest, d->labels[i].key,
                                           d->labels[i].value, err) < 0)
                        return cap_error_prefix(err, "label blob %s", d->digest);
        return 0;
}

static int cs_flush(struct content_sink *cs, struct cap_error *err)
{
        if (cs->len == 0)
                return 0;
        int r = ctrd_writer_write(cs->writer, cs->buf, cs->len, err);
        cs->len = 0;
        return r;
}

static int cs_write(void *ud, const void *data, size_t len, struct cap_error *err)
{
        struct content_sink *cs = ud;
        const unsigned char *p = data;
        while (len > 0) {
                size_t n = CONTENT_BUF - cs->len < len ? CONTENT_BUF - cs->len : len;
                memcpy(cs->buf + cs->len, p, n);
                cs->len += n;
                p += n;
                len -= n;
                if (cs->len == CONTENT_BUF && cs_flush(cs, err) < 0)
                        return err->code;
        }
        return 0;
}

static int cs_commit(void *ud, const struct blob_desc *d, struct cap_error *err)
{
        struct content_sink *cs = ud;
        if (cs_flush(cs, err) < 0) {
                ctrd_writer_abort(cs->writer);
                cs->writer = NULL;
                return err->code;
        }
        struct ctrd_label labels[d->n_labels + 1];
        to_ctrd_labels(d, labels);
        int r = ctrd_writer_commit(cs->writer, labels, d->n_labels, err);
        cs->writer = NULL;
        return r;
}

static void cs_abort(void *ud)
{
        struct content_sink *cs = ud;
        ctrd_writer_abort(cs->writer);
        cs->writer = NULL;
        cs->len = 0;
}

static const struct blob_sink_ops content_ops = {
    .begin = cs_begin,
    .write = cs_write,
    .commit = cs_commit,
    .abort = cs_abort,
};

int content_sink_init(struct content_sink *cs, struct ctrd_client *client, struct cap_error *err)
{
        *cs = (struct content_sink){.sink = {.ops = &content_ops, .ud = cs}, .client = client};
        if (!(cs->buf = malloc(CONTENT_BUF)))
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        unsigned char rnd[8];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                return cap_error_errno(err, -errno, "getrandom");
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(cs->tag + 2 * i, 3, "%02x", rnd[i]);
        return 0;
}

void content_sink_done(struct content_sink *cs)
{
        ctrd_writer_abort(cs->writer);
        free(cs->buf);
        *cs = (struct content_sink){0};
}
