/* Fault injection points (see fault.h). */
#include "fault.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

#include "log.h"

#define POWERCUT "powercut:"

/* Whether we run on a Capsule: started by PID 1, and PID 1 is capsuled. */
static bool on_capsule(void)
{
        if (getppid() != 1)
                return false;
        FILE *f = fopen("/proc/1/comm", "re");
        if (!f)
                return false;
        char comm[32] = "";
        bool yes = fgets(comm, sizeof(comm), f) && strcmp(comm, "capsuled\n") == 0;
        fclose(f);
        return yes;
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
