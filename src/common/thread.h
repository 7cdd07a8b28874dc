/* A thread nobody joins: started detached, so its resources go when it returns. */
#pragma once

#include <pthread.h>

/* Returns 0 or the error number pthread_create gave. */
static inline int thread_start_detached(void *(*fn)(void *), void *arg)
{
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        int e = pthread_create(&t, &attr, fn, arg);
        pthread_attr_destroy(&attr);
        return e;
}
