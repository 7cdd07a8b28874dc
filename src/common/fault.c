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

/* Whether we run on a Capsule: started by PID 1, and PID 1 runs the same binary as we do. */
static bool on_capsule(void)
{
        if (getppid() != 1)
                return false;
        char self[PATH_MAX], init[PATH_MAX];
        ssize_t a = readlink("/proc/self/exe", self, sizeof(self) - 1);
        ssize_t b = readlink("/proc/1/exe", init, sizeof(init) - 1);
        if (a <= 0 || b <= 0)
                return false;
        self[a] = init[b] = '\0';
        return strcmp(self, init) == 0;
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
