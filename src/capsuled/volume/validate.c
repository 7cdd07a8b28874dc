/* Pure volume rules (sizes, the test-attach list); no I/O besides reading the environment, so
 * unit tests link this file alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/names.h"
#include "common/quantity.h"
#include "volume.h"

int volume_check_size(const char *field, uint64_t size, struct cap_error *err)
{
        char a[QUANTITY_BUF_SIZE], b[QUANTITY_BUF_SIZE];
        if (size == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: required (e.g. 1Gi)",
                                     field);
        if (size < VOLUME_MIN_BYTES)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: %s is below the minimum of %s", field,
                                     quantity_format_bytes(size, a, sizeof(a)),
                                     quantity_format_bytes(VOLUME_MIN_BYTES, b, sizeof(b)));
        if (size > VOLUME_MAX_BYTES)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: %s is above the maximum of %s", field,
                                     quantity_format_bytes(size, a, sizeof(a)),
                                     quantity_format_bytes(VOLUME_MAX_BYTES, b, sizeof(b)));
        return 0;
}

int volume_parse_attach_list(const char *text,
                             void (*fn)(void *ud, const char *vol, const char *wl), void *ud)
{
        char *copy = strdup(text), *save = NULL;
        if (!copy)
                return -ENOMEM;
        int n = 0;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                char *colon = strchr(tok, ':');
                if (!colon) {
                        n = -EINVAL;
                        break;
                }
                *colon = 0;
                if (!name_is_valid(tok) || !name_is_valid(colon + 1)) {
                        n = -EINVAL;
                        break;
                }
                fn(ud, tok, colon + 1);
                n++;
        }
        free(copy);
        return n;
}


int volume_ext4_fs_bytes(const uint8_t sb[1024], uint64_t *bytes)
{
#define LE32(o)                                                                                    \
        ((uint32_t)sb[o] | (uint32_t)sb[(o) + 1] << 8 | (uint32_t)sb[(o) + 2] << 16 |              \
         (uint32_t)sb[(o) + 3] << 24)
        if ((LE32(0x38) & 0xffff) != 0xEF53)
                return -EINVAL;
        uint64_t blocks = LE32(0x4);
        if (LE32(0x60) & 0x80) /* INCOMPAT_64BIT */
                blocks |= (uint64_t)LE32(0x150) << 32;
        uint32_t log = LE32(0x18);
        if (log > 6)
                return -EINVAL;
        *bytes = blocks * (1024u << log);
#undef LE32
        return 0;
}
