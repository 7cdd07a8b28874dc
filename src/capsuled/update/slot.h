/* The A/B slots on disk (design §9, docs/updates.md): the root image partitions slot_a/slot_b,
 * the per-slot kernel and initramfs on the ESP (ESP/a/, ESP/b/), and systemd-boot's entries with
 * boot counting (loader/entries/capsule-b+1-0.conf: one try left, none done; capsule-b.conf once
 * blessed).
 *
 * The slot writer is the bundle reader's sink: it first makes the inactive slot unbootable
 * (removes its loader entries and ESP files, zeroes the first 4 KiB of its partition, fsyncs),
 * then writes each part, and writes the root image's first 4 KiB (the squashfs superblock) last,
 * so a slot is recognisable only once all of it is on disk. The loader entry comes after every
 * part, as a one-try entry. Paths (ESP mount point, partition, /dev and /sys roots) are
 * parameters, so the tests run on temporary files. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bundle.h"
#include "common/error.h"

/* The kernel command line after capsule.slot= and root= (mkimage/build.sh's cmdline_a). */
#define UPDATE_DEFAULT_OPTIONS "console=tty0 console=ttyS0,115200 panic=10 quiet printk.devkmsg=on"
/* efivarfs file of the entry systemd-boot booted (4 bytes of attributes, then UTF-16LE). */
#define UPDATE_EFIVAR_ENTRY_SELECTED                                                               \
        "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
/* Bytes zeroed at the start of a slot to mark it empty, and written last. */
#define UPDATE_SLOT_HEADER 4096
/* Kept free on the ESP beyond the parts (loader entry, loader.conf rewrite). */
#define UPDATE_ESP_MARGIN (64 * 1024)

/* "a" <-> "b"; NULL for anything else. */
const char *update_slot_other(const char *slot);
bool update_slot_is_valid(const char *slot);

/* A loader entry file name: capsule-SLOT[+LEFT[-DONE]].conf (".conf" optional when parsing, as
 * loader IDs may come without it). */
struct update_entry {
        char slot[2];
        bool counting; /* carries a boot counter: a tentative (not yet blessed) entry */
        unsigned tries_left, tries_done;
};
/* -EINVAL for a name that is not one of ours. */
int update_entry_parse(const char *name, struct update_entry *out);
/* The file name for e ("capsule-b+1-0.conf", or "capsule-b.conf" when not counting). */
int update_entry_format(const struct update_entry *e, char *buf, size_t size);
/* The blessed name of slot's entry: "capsule-b.conf". */
int update_entry_blessed_name(const char *slot, char *buf, size_t size);
/* True for one of our entries with a boot counter (+LEFT or +LEFT-DONE). */
bool update_entry_is_tentative(const char *name);

/* The text of slot's loader entry (title, version, linux, initrd, options with capsule.slot= and
 * root=PARTLABEL=slot_X before options, UPDATE_DEFAULT_OPTIONS when NULL). *out is malloc'd. */
int update_entry_render(const char *slot, const char *version, const char *options, char **out,
                        struct cap_error *err);

/* Reads an efivarfs string variable (LoaderEntrySelected): 4 attribute bytes, then UTF-16LE up
 * to a NUL or the end; converted to UTF-8 into buf. */
int update_efivar_read_string(const char *path, char *buf, size_t size, struct cap_error *err);

/* ESP helpers; esp is the mounted ESP's directory. Each leaves the change durable (the file and
 * its directory fsynced) before returning. */
/* Writes ESP/rel as rel.tmp, fsync, rename, fsync of the directory. */
int update_esp_write_file(const char *esp, const char *rel, const void *data, size_t len,
                          struct cap_error *err);
/* Removes slot's loader entries (blessed or counting). */
int update_esp_remove_entries(const char *esp, const char *slot, struct cap_error *err);
/* Writes loader/entries/capsule-SLOT+TRIES-0.conf (tries 0: the blessed capsule-SLOT.conf);
 * the file name goes to name (may be NULL). */
int update_esp_write_entry(const char *esp, const char *slot, const char *version,
                           const char *options, unsigned tries, char *name, size_t name_size,
                           struct cap_error *err);
/* Sets `default ENTRY` in loader/loader.conf, keeping its other lines. */
int update_esp_set_default(const char *esp, const char *entry, struct cap_error *err);
/* Blesses slot: renames its counting entry (whatever its counters) to capsule-SLOT.conf and makes
 * that the default. Already blessed is fine; no entry at all is NOT_FOUND. */
int update_esp_bless(const char *esp, const char *slot, struct cap_error *err);

/* The partition named label: ROOT/dev/disk/by-partlabel/LABEL when it exists, else the device of
 * the ROOT/sys/class/block/x/uevent that says PARTNAME=LABEL (as ROOT/dev/DEVNAME). root is ""
 * on a real system. NOT_FOUND when none. */
int update_slot_find_partition(const char *root, const char *label, char *buf, size_t size,
                               struct cap_error *err);
/* The size of a block device or regular file. */
int update_slot_size(const char *partition, uint64_t *bytes, struct cap_error *err);
/* Zeroes the first UPDATE_SLOT_HEADER bytes of partition and fsyncs: no longer a squashfs. */
int update_slot_mark_empty(const char *partition, struct cap_error *err);

struct update_slot_target {
        const char *esp;       /* mounted ESP directory */
        const char *slot;      /* the inactive slot to write: "a" or "b" */
        const char *partition; /* its partition (block device, or a file in tests) */
};

struct update_slot_writer;

/* Makes the target slot unbootable (entries removed, ESP files removed, partition marked empty,
 * all fsynced) and returns a writer for it. */
int update_slot_writer_begin(const struct update_slot_target *t, struct update_slot_writer **out,
                             struct cap_error *err);
/* Fills sink with the writer's callbacks (capacity, open, write, close, abort). */
void update_slot_writer_sink(struct update_slot_writer *w, struct bundle_sink *sink);
/* After bundle_reader_finish succeeded: writes the one-try entry capsule-SLOT+1-0.conf and makes
 * it the default. options NULL: UPDATE_DEFAULT_OPTIONS. */
int update_slot_writer_commit(struct update_slot_writer *w, const struct bundle_manifest *m,
                              const char *options, struct cap_error *err);
void update_slot_writer_free(struct update_slot_writer *w);
