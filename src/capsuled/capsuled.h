/* Entry points of capsuled's roles (main.c: PID 1; main_serve.c: the rest). */
#pragma once

/* Where main.c finds the control plane's executable on a Capsule. */
#define CAPSULED_SERVE_PATH "/usr/libexec/capsule/capsuled-serve"

/* The usage both executables print (capsuled-serve only when run by hand). */
#define CAPSULED_USAGE                                                                             \
        "usage: capsuled serve --root DIR --machine-config FILE [--listen ADDR] [options]\n"        \
        "       capsuled init      (PID 1 role; chosen automatically when run as PID 1)\n"          \
        "       capsuled probe-accel --kernel K --initrd I [--cache FILE] [--json]\n"              \
        "                          (kvm or tcg: can this host run a microVM under KVM?)\n"         \
        "       capsuled check-config FILE   (is this machine config valid? exit 0/1)\n"          \
        "       capsuled version\n"                                                              \
        "Run `capsuled serve --help` for the control plane's options.\n"

/* PID 1 role (src/capsuled/init/). Never returns when PID 1. */
int init_main(int argc, char **argv);
/* Control plane (src/capsuled/serve/). Returns the process exit code. */
int serve_main(int argc, char **argv);
