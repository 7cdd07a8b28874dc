/* Entry points of capsuled's roles (see main.c). */
#pragma once

/* PID 1 role (src/capsuled/init/). Never returns when PID 1. */
int init_main(int argc, char **argv);
/* Control plane (src/capsuled/serve/). Returns the process exit code. */
int serve_main(int argc, char **argv);
