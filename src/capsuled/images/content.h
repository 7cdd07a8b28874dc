/* A blob_sink (blob.h) over containerd's content store: Content.Write through a leased client,
 * buffered into 1 MiB messages, with the blob's labels set at commit (also on blobs that were
 * already there, so GC references are complete). Each sink writes under its own ingest refs
 * ("capsule-import-<random>-<digest>"), so two imports sharing a blob do not lock each other
 * out; the second commit of a digest is ALREADY_EXISTS, which counts as success. */
#pragma once

#include "blob.h"

struct ctrd_client;

struct content_sink {
        struct blob_sink sink; /* pass &cs.sink to producers */
        struct ctrd_client *client;
        struct ctrd_writer *writer;
        char ref[128];
        char tag[17]; /* random, per sink: concurrent imports of one blob use distinct ingest refs */
        unsigned char *buf;
        size_t len;
};

/* client must carry a lease (ctrd_import_client). */
int content_sink_init(struct content_sink *cs, struct ctrd_client *client, struct cap_error *err);
void content_sink_done(struct content_sink *cs);
