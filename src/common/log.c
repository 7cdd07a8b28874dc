/* Implementation of the one-line logger (see log.h). */
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LVL_INFO;
static const char *component = "capsule";
static int kmsg_fd = -1;

void log_set_level(enum log_level level)
{
        min_level = level;
}

void log_set_component(const char *c)
{
        component = c;
}

int log_set_kmsg(void)
{
        int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -1;
        kmsg_fd = fd;
        return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        static const char *const names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
        static const int kmsg_prio[] = {7, 6, 4, 3};
        if (level < min_level)
                return;
        char line[2048];
        int n;
        if (kmsg_fd >= 0) {
                n = snprintf(line, sizeof(line), "<%d>%s: ", kmsg_prio[level], component);
        } else {
                struct timespec ts;
                struct tm tm;
                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                             tm.tm_sec, ts.tv_nsec / 1000000, names[level], component);
        }
        if (n < 0 || (size_t)n >= sizeof(line))
                n = 0;
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (m < 0)
                m = 0;
        size_t len = (size_t)n + (size_t)m;
        if (len > sizeof(line) - 2)
                len = sizeof(line) - 2;
        /* keep one line per record */
        for (size_t i = (size_t)n; i < len; i++)
                if (line[i] == '\n')
                        line[i] = ' ';
        line[len++] = '\n';
        ssize_t w = write(kmsg_fd >= 0 ? kmsg_fd : STDERR_FILENO, line, len);
        (void)w;
}
