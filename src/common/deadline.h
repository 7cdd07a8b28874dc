/* A deadline timeout_ms from now on a clock, as pthread_cond_timedwait and
 * pthread_mutex_timedlock take it (CLOCK_REALTIME for mutexes and default condition variables,
 * CLOCK_MONOTONIC for condition variables created with that clock). */
#pragma once

#include <time.h>

static inline struct timespec deadline_in_ms(clockid_t clock, int timeout_ms)
{
        struct timespec ts;
        clock_gettime(clock, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        return ts;
}
