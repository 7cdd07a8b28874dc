/* DNS-label name validation (see names.h). */
#include "names.h"

#include <errno.h>
#include <string.h>

bool name_is_valid(const char *name)
{
        if (!name)
                return false;
        size_t n = strlen(name);
        if (n < 1 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                if (alnum)
                        continue;
                if (c == '-' && i != 0 && i != n - 1)
                        continue;
                return false;
        }
        return true;
}

int name_check(const char *field, const char *name, struct cap_error *err)
{
        if (name_is_valid(name))
                return 0;
        if (!name || !*name)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: must not be empty", field);
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                             "%s \"%.80s\": must be a DNS label (1-63 characters of a-z, 0-9 and '-', "
                             "starting and ending with a letter or digit)",
                             field, name);
}
