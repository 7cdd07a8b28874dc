/* Hardware watchdog: PID 1 pets /dev/watchdog from its main loop while the machine is healthy, so
 * a hung PID 1 (or a control plane that stays down, see init.c) ends in a reset, and with A/B
 * updates a reset of a tentative boot falls back to the good slot. Without a hardware watchdog
 * (Debian's cloud kernel has no i6300esb driver) the software one, softdog, is loaded instead:
 * it catches a hung userspace, and panic=10 covers kernel panics. */
#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../../common/log.h"
#include "init.h"

#define WATCHDOG_TIMEOUT_S 60

static struct watchdog {
        int fd;
        int64_t last_pet;
} wd = {.fd = -1};

int watchdog_open(void)
{
        if (access("/dev/watchdog", F_OK) < 0)
                run_cmd((char *[]){"/sbin/modprobe", "-q", "softdog", NULL}, 20000, NULL, 0);
        wd.fd = open("/dev/watchdog", O_WRONLY | O_CLOEXEC);
        if (wd.fd < 0) {
                log_warn("watchdog: /dev/watchdog: %s; running without one", strerror(errno));
                return -errno;
        }
        int timeout = WATCHDOG_TIMEOUT_S;
        if (ioctl(wd.fd, WDIOC_SETTIMEOUT, &timeout) < 0)
                log_warn("watchdog: set timeout: %s", strerror(errno));
        struct watchdog_info info = {0};
        ioctl(wd.fd, WDIOC_GETSUPPORT, &info);
        log_info("watchdog: %s armed, timeout %d s", info.identity[0] ? (char *)info.identity : "?",
                 timeout);
        watchdog_pet();
        return 0;
}

void watchdog_pet(void)
{
        if (wd.fd < 0)
                return;
        int64_t now = now_ms();
        if (now - wd.last_pet < 1000)
                return;
        if (ioctl(wd.fd, WDIOC_KEEPALIVE, 0) < 0)
                log_warn("watchdog: keepalive: %s", strerror(errno));
        wd.last_pet = now;
}

void watchdog_close(void)
{
        if (wd.fd < 0)
                return;
        if (write(wd.fd, "V", 1) != 1)
                log_warn("watchdog: magic close: %s", strerror(errno));
        close(wd.fd);
        wd.fd = -1;
}
