/* capsulectl's one client-streaming upload: a header message, then a file's bytes in chunk
 * messages, optionally a trailer carrying their sha256, then the call's single response; with
 * progress on stderr (progress.h). Used by `image push` (Images.Push), `update push`
 * (Updates.Push) and `volume restore` (Volumes.Restore), whose messages differ only in where the
 * bytes go: the caller says that with set_data (and trailer). */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

struct rpc_client;

struct ctl_upload {
        const char *method;                         /* "/capsule.v1.Images/Push" */
        const ProtobufCMessageDescriptor *response; /* the call's one response */
        const ProtobufCMessage *header;             /* sent first */
        ProtobufCMessage *chunk;                    /* set_data'd and sent for every chunk */
        void (*set_data)(ProtobufCMessage *chunk, const uint8_t *data, size_t len);
        /* If set: after the last chunk, turns chunk into the trailer for the sha256 (lowercase
         * hex) of every byte sent, which is then sent. */
        void (*trailer)(ProtobufCMessage *chunk, const char *sha256_hex);
        size_t chunk_size;           /* bytes per chunk message */
        const char *progress_label;  /* on a terminal */
        bool progress_lines;         /* plain lines when stderr is not a terminal */
        const char *sent_note;       /* printed once all is sent, whenever progress shows */
        FILE *note_to;               /* where sent_note goes (NULL: stderr) */
};

/* Opens path for an upload (standard input for "-" when allow_stdin) and sets *total to its size
 * (0 when not a regular file). Returns the fd, or negative with err set to "PATH: reason". */
int ctl_upload_open(const char *path, bool allow_stdin, uint64_t *total, struct cap_error *err);

/* Runs the upload of fd (path names it in messages; total its size, 0 when unknown). Returns 0
 * with *resp set (free with protobuf_c_message_free_unpacked), or negative with err set: a read
 * error names path; a refused send carries the server's status. */
int ctl_upload_file(struct rpc_client *cl, const struct ctl_upload *u, int fd, const char *path,
                    uint64_t total, ProtobufCMessage **resp, struct cap_error *err);
