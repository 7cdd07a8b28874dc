/* Fault injection points (see fault.h). */
#include "fault.h"

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

#include "log.h"

#define POWERCUT "powercut:"

/* Whether we run on a Capsule: started by PID 1, and PID 1 is capsuled (src/capsuled/main.c; we
 * are capsuled-serve, or capsuled itself). */
static bool on_capsule(void)
{
        if (getppid() != 1)
                return false;
        char init[PATH_MAX];
        ssize_t b = readlink("/proc/1/exe", init, sizeof(init) - 1);
        if (b <= 0)
                return false;
        init[b] = '\0';
        const char *base = strrchr(init, '/');
        return strcmp(base ? base + 1 : init, "capsuled") == 0;
}

void fault_point(const char *point)
{
        const char *f = getenv("CAPSULE_FAULT");
        if (!f)
                return;
        bool powercut = strncmp(f, POWERCUT, strlen(POWERCUT)) == 0;
        if (strcmp(powercut ? f + strlen(POWERCUT) : f, point) != 0)
                return;
        if (powercut && on_capsule()) {
                log_warn("CAPSULE_FAULT=%s: powering off without sync (test seam)", f);
                reboot(RB_POWER_OFF);
                log_error("CAPSULE_FAULT: reboot(RB_POWER_OFF) failed; killing ourselves instead");
        } else {
                log_warn("CAPSULE_FAULT=%s: killing ourselves (test seam)", f);
        }
        raise(SIGKILL);
}

bool fault_stall(const char *point)
{
        const char *f = getenv("CAPSULE_FAULT");
        if (!f || strncmp(f, "stall:", 6) != 0 || strcmp(f + 6, point) != 0)
                return false;
        log_warn("CAPSULE_FAULT=%s: stalling here (test seam)", f);
        return true;
}
