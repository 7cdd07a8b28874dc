/* One-line, greppable logging to stderr:
 *   2026-11-29T21:45:16.123Z INFO  serve: listening addr=127.0.0.1:50000
 * Thread-safe (one write(2) per line). PID 1 can redirect it to /dev/kmsg with log_set_kmsg(). */
#pragma once

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_set_level(enum log_level level);
void log_set_component(const char *component);
/* Sends lines to /dev/kmsg (with a "<N>" priority prefix) instead of stderr. */
int log_set_kmsg(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
