/* capsule-log-writer: `capsuled log-writer` as a program of its own, linked against libc only,
 * for containerd's shim to start per task (binary:// log URI, see logs.h). Same arguments as
 * capsuled's: `log-writer PATH [CAP_BYTES]`, so the URI's query does not depend on which of the
 * two capsuled found (serve.c prefers this one: it starts in about 2 ms instead of ~35). */
#include <stdio.h>
#include <string.h>

#include "logs.h"

int main(int argc, char **argv)
{
        if (argc < 2 || strcmp(argv[1], "log-writer") != 0) {
                fprintf(stderr, "usage: capsule-log-writer log-writer PATH [CAP_BYTES] (run by containerd's shim)\n");
                return 2;
        }
        return logwriter_main(argc - 1, argv + 1);
}
