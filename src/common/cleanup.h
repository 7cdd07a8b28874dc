/* systemd-style cleanup attributes: every early return frees what the function owns. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cap_freep(void *p)
{
        free(*(void **)p);
}
static inline void cap_closep(int *fd)
{
        if (*fd >= 0)
                close(*fd);
}
static inline void cap_fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

#define _cleanup_(x) __attribute__((cleanup(x)))
#define _cleanup_free_ _cleanup_(cap_freep)
#define _cleanup_close_ _cleanup_(cap_closep)
#define _cleanup_fclose_ _cleanup_(cap_fclosep)

/* Returns the pointer and sets the variable to NULL: hands ownership out of a cleanup scope. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _p = (p);                                                            \
                (p) = NULL;                                                                        \
                _p;                                                                                \
        })
#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd = (fd);                                                                    \
                (fd) = -1;                                                                         \
                _fd;                                                                               \
        })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
