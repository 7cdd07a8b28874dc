/* capsulectl cp's tar halves (cp.c), apart from the verb so that they are unit-tested. */
#pragma once

#include <stddef.h>

/* Extracts the tar stream on fd into DEST_DIR, every entry renamed from SRC_NAME[/...] to
 * DEST_NAME[/...]. Refuses (returns -1, why filled, stops) an entry outside SRC_NAME, with "..",
 * a hard link outside the copy, a write through a symbolic link; skips devices and FIFOs; does not
 * restore owners. *n_files: entries written. */
int cp_extract(int fd, const char *src_name, const char *dest_dir, const char *dest_name, size_t *n_files,
               char *why, size_t why_len);

/* Writes SRC (a file or a directory, recursively, symbolic links as links) to fd as a ustar
 * stream whose top entry is named DEST_NAME, owned by root. -1 with why filled on failure. */
int cp_archive(int fd, const char *src, const char *dest_name, char *why, size_t why_len);
