/* runtool.h - a built tool run as a process by the tests of the tools
 * (test_frnn_run, test_frnn_bench): arguments in, exit status and what it
 * printed out. */
#ifndef FRNN_RUNTOOL_H
#define FRNN_RUNTOOL_H

#include <stdarg.h>
#include <stddef.h>

/* The path of the built tool `name`, $FRNN_BUILD_DIR/name, into path.
 * Returns 0; else, after a line on stdout that says why, what the test's
 * main should return: 77 (CTest: skipped) when FRNN_BUILD_DIR is not set
 * (CTest sets it), EXIT_FAILURE when the tool has not been built. */
int rt_find_tool(const char *name, char *path, size_t size);

/* A text file into buf (at most size - 1 bytes, then a NUL); empty when it
 * cannot be opened. */
void rt_slurp(const char *path, char *buf, size_t size);

/* Runs the executable at `tool` with the arguments arg, then those of ap (a
 * NULL-terminated list, at most 62 in all: a test's variadic run_tool passes
 * its own) in this process's environment; its stdout and stderr go to
 * dir/stdout.txt and dir/stderr.txt, then into out and err (as rt_slurp).
 * Returns the exit status; a tool that cannot be started or dies of a
 * signal fails the test (a Check assertion). */
int rt_vrun(const char *tool, const char *dir, char *out, size_t out_size, char *err,
            size_t err_size, const char *arg, va_list ap);

#endif
