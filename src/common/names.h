/* Name rules. Workload, volume and context names become LV names, paths and netns names, so only
 * DNS labels are accepted: [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? */
#pragma once

#include <stdbool.h>
#include "error.h"

bool name_is_valid(const char *name);
/* Validates and, on failure, fills err naming the field: "name \"Web_1\": must be a DNS label ..." */
int name_check(const char *field, const char *name, struct cap_error *err);
