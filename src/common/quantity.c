/* Parsing and canonical formatting of byte sizes and CPU counts (see quantity.h). Pure functions:
 * used by the manifest layer, capsulectl flags (`volume create --size`) and the fuzz targets. */
#include "quantity.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct unit {
        const char *suffix;
        uint64_t mult;
};

#define KI 1024ULL
#define K 1000ULL

/* Binary units first, largest first, so formatting picks the most readable exact unit. */
static const struct unit binary_units[] = {
    {"Ei", KI *KI *KI *KI *KI *KI},
    {"Pi", KI *KI *KI *KI *KI},
    {"Ti", KI *KI *KI *KI},
    {"Gi", KI *KI *KI},
    {"Mi", KI *KI},
    {"Ki", KI},
};
static const struct unit decimal_units[] = {
    {"E", K *K *K *K *K *K},
    {"P", K *K *K *K *K},
    {"T", K *K *K *K},
    {"G", K *K *K},
    {"M", K *K},
    {"k", K},
    {"K", K},
};

/* Prints at most 40 characters of the input so error messages stay bounded. */
#define QFMT "\"%.40s%s\""
#define QARG(t) (t), (strlen(t) > 40 ? "..." : "")

/* Splits "123.45Gi" into integer digits, fraction digits and unit. Returns 0 or a reason. */
static const char *split_number(const char *t, const char **int_end, const char **frac,
                                size_t *frac_len, const char **unit)
{
        const char *p = t;
        if (*p == '-')
                return "must not be negative";
        if (*p < '0' || *p > '9')
                return "not a number";
        while (*p >= '0' && *p <= '9')
                p++;
        *int_end = p;
        *frac = NULL;
        *frac_len = 0;
        if (*p == '.') {
                p++;
                *frac = p;
                while (*p >= '0' && *p <= '9')
                        p++;
                *frac_len = (size_t)(p - *frac);
                if (*frac_len == 0)
                        return "missing digits after '.'";
        }
        *unit = p;
        return NULL;
}

int quantity_parse_bytes(const char *text, uint64_t *out, struct cap_error *err)
{
        if (!text || !*text)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "empty size");
        const char *int_end, *frac, *unit;
        size_t frac_len;
        const char *why = split_number(text, &int_end, &frac, &frac_len, &unit);
        if (why)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT ": %s (expected e.g. 512Mi, 1Gi, 1G or a byte count)",
                                     QARG(text), why);
        uint64_t mult = 0;
        if (!*unit)
                mult = 1;
        for (size_t i = 0; !mult && i < sizeof(binary_units) / sizeof(binary_units[0]); i++)
                if (strcmp(unit, binary_units[i].suffix) == 0)
                        mult = binary_units[i].mult;
        for (size_t i = 0; !mult && i < sizeof(decimal_units) / sizeof(decimal_units[0]); i++)
                if (strcmp(unit, decimal_units[i].suffix) == 0)
                        mult = decimal_units[i].mult;
        if (!mult)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT
                                     ": unknown unit \"%.8s\" (expected Ki, Mi, Gi, Ti, Pi, Ei, "
                                     "k, M, G, T, P, E or none for bytes)",
                                     QARG(text), unit);
        if (int_end - text > 20 || frac_len > 18)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, QFMT ": too large",
                                     QARG(text));
        unsigned __int128 whole = 0, fnum = 0, fden = 1;
        for (const char *p = text; p < int_end; p++)
                whole = whole * 10 + (unsigned)(*p - '0');
        for (size_t i = 0; i < frac_len; i++) {
                fnum = fnum * 10 + (unsigned)(frac[i] - '0');
                fden *= 10;
        }
        unsigned __int128 total = whole * mult;
        unsigned __int128 fpart = fnum * mult;
        if (fpart % fden != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT ": not a whole number of bytes", QARG(text));
        total += fpart / fden;
        if (total > UINT64_MAX)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT ": too large (maximum is 16Ei - 1 bytes)", QARG(text));
        *out = (uint64_t)total;
        return 0;
}

int quantity_parse_millicpus(const char *text, uint64_t *out, struct cap_error *err)
{
        if (!text || !*text)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "empty CPU count");
        const char *int_end, *frac, *unit;
        size_t frac_len;
        const char *why = split_number(text, &int_end, &frac, &frac_len, &unit);
        if (!why && *unit && (strcmp(unit, "m") != 0 || frac))
                why = "unknown unit (expected a number like 1 or 0.5, or millicores like 500m)";
        if (why)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT ": %s (expected e.g. 1, 0.5 or 500m)", QARG(text), why);
        if (frac_len > 3)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     QFMT ": at most 3 decimals (millicores)", QARG(text));
        uint64_t milli = 0;
        bool millis = *unit == 'm';
        for (const char *p = text; p < int_end; p++) {
                milli = milli * 10 + (uint64_t)(*p - '0');
                if (milli > (uint64_t)QUANTITY_MAX_CPUS * 1000)
                        goto too_many;
        }
        if (!millis) {
                milli *= 1000;
                uint64_t scale = 100;
                for (size_t i = 0; i < frac_len; i++, scale /= 10)
                        milli += (uint64_t)(frac[i] - '0') * scale;
        }
        if (milli > (uint64_t)QUANTITY_MAX_CPUS * 1000)
                goto too_many;
        *out = milli;
        return 0;
too_many:
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, QFMT ": more than %d CPUs",
                             QARG(text), QUANTITY_MAX_CPUS);
}

int quantity_parse_cpus(const char *text, double *out, struct cap_error *err)
{
        uint64_t milli;
        int r = quantity_parse_millicpus(text, &milli, err);
        if (r < 0)
                return r;
        *out = (double)milli / 1000.0;
        return 0;
}

char *quantity_format_bytes(uint64_t bytes, char *buf, size_t size)
{
        if (bytes != 0) {
                for (size_t i = 0; i < sizeof(binary_units) / sizeof(binary_units[0]); i++)
                        if (bytes % binary_units[i].mult == 0) {
                                snprintf(buf, size, "%" PRIu64 "%s", bytes / binary_units[i].mult,
                                         binary_units[i].suffix);
                                return buf;
                        }
                /* The last decimal unit ("K") is an alias of "k": never produced. */
                for (size_t i = 0; i + 1 < sizeof(decimal_units) / sizeof(decimal_units[0]); i++)
                        if (bytes % decimal_units[i].mult == 0) {
                                snprintf(buf, size, "%" PRIu64 "%s", bytes / decimal_units[i].mult,
                                         decimal_units[i].suffix);
                                return buf;
                        }
        }
        snprintf(buf, size, "%" PRIu64, bytes);
        return buf;
}

uint64_t quantity_cpus_to_milli(double cpus)
{
        if (!(cpus >= 0) || cpus > 1e15)
                return UINT64_MAX;
        return (uint64_t)(cpus * 1000.0 + 0.5); /* rounding without libm */
}

char *quantity_format_cpus(double cpus, char *buf, size_t size)
{
        uint64_t milli = quantity_cpus_to_milli(cpus);
        if (milli == UINT64_MAX) {
                snprintf(buf, size, "%g", cpus);
                return buf;
        }
        uint64_t whole = milli / 1000, frac = milli % 1000;
        if (frac == 0)
                snprintf(buf, size, "%" PRIu64, whole);
        else if (frac % 100 == 0)
                snprintf(buf, size, "%" PRIu64 ".%" PRIu64, whole, frac / 100);
        else if (frac % 10 == 0)
                snprintf(buf, size, "%" PRIu64 ".%02" PRIu64, whole, frac / 10);
        else
                snprintf(buf, size, "%" PRIu64 ".%03" PRIu64, whole, frac);
        return buf;
}
