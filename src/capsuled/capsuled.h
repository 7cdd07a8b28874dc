/* Entry points of capsuled's roles (main.c: PID 1; main_serve.c: the rest). */
#pragma once

/* Where main.c finds the control plane's executable on a Capsule. */
#define CAPSULED_SERVE_PATH "/usr/libexec/capsule/capsuled-serve"

/* PID 1 role (src/capsuled/init/). Never returns when PID 1. */
int init_main(int argc, char **argv);
/* Control plane (src/capsuled/serve/). Returns the process exit code. */
int serve_main(int argc, char **argv);
