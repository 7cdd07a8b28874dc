/* Quantities in manifests and on the command line: byte sizes ("256Mi", "1Gi", "1G", "4096") and
 * CPU counts ("1", "0.5", "500m").
 *
 * Sizes: an unsigned decimal number, optionally with a fraction, and an optional unit:
 *   Ki Mi Gi Ti Pi Ei (powers of 1024), k K M G T P E (powers of 1000), none (bytes).
 * The result must be a whole number of bytes that fits in 64 bits ("1.5Ki" is 1536, "0.5" is not).
 * CPUs: a decimal number with at most 3 decimals, or an integer followed by "m" (millicores);
 * 0 means unlimited, the maximum is QUANTITY_MAX_CPUS.
 * Formatting gives the canonical text, which parses back to the same value. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define QUANTITY_MAX_CPUS 1024
/* Large enough for any formatted quantity. */
#define QUANTITY_BUF_SIZE 32

/* Parses a size. On failure returns -EINVAL and sets err->msg to "\"TEXT\": reason". */
int quantity_parse_bytes(const char *text, uint64_t *out, struct cap_error *err);
/* Parses a CPU count into millicores (0..QUANTITY_MAX_CPUS*1000). Same error convention. */
int quantity_parse_millicpus(const char *text, uint64_t *out, struct cap_error *err);
/* Like quantity_parse_millicpus, giving CPUs as a double (millicores / 1000.0). */
int quantity_parse_cpus(const char *text, double *out, struct cap_error *err);

/* Canonical text: the largest exact binary unit ("256Mi"), else the largest exact decimal unit
 * ("1G"), else plain bytes. buf must hold QUANTITY_BUF_SIZE bytes. Returns buf. */
char *quantity_format_bytes(uint64_t bytes, char *buf, size_t size);
/* Canonical CPU text: "1", "0.5", "2.125" (rounded to millicores). Returns buf. */
char *quantity_format_cpus(double cpus, char *buf, size_t size);
/* Rounds a CPU count to millicores; negative, NaN and huge values map to UINT64_MAX. */
uint64_t quantity_cpus_to_milli(double cpus);
