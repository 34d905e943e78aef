/* errbuf.h - the tools' error convention: a function that can fail takes a
 * caller's buffer (err, size) for the message and returns -1 on failure.
 * Header-only, so that the tests that compile a tool source in
 * (#include "npy.c", "ranges.c") need nothing else. */
#ifndef FRNN_ERRBUF_H
#define FRNN_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Format the message into err (when err and size are nonzero); returns -1. */
static inline int errbuf_fail(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int errbuf_fail(char *err, size_t size, const char *fmt, ...) {
  if (err && size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
  }
  return -1;
}

#endif
