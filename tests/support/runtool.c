/* runtool.c - see runtool.h. */
#include "runtool.h"

#include <check.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int rt_find_tool(const char *name, char *path, size_t size) {
  const char *build = getenv("FRNN_BUILD_DIR");
  if (!build || !*build) {
    printf("FRNN_BUILD_DIR is not set (CTest sets it): skipped\n");
    return 77;
  }
  snprintf(path, size, "%s/%s", build, name);
  if (access(path, X_OK) != 0) {
    printf("%s is missing: build the tools first\n", path);
    return EXIT_FAILURE;
  }
  return 0;
}

void rt_slurp(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(buf, 1, size - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
}

int rt_vrun(const char *tool, const char *dir, char *out, size_t out_size, char *err,
            size_t err_size, const char *arg, va_list ap) {
  const char *argv[64] = {tool};
  int argc = 1;
  for (const char *a = arg; a && argc < 63; a = va_arg(ap, const char *)) argv[argc++] = a;
  argv[argc] = NULL;
  char out_path[256], err_path[256];
  snprintf(out_path, sizeof out_path, "%s/stdout.txt", dir);
  snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, tool, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  ck_assert_msg(rc == 0, "cannot run %s: %s", tool, strerror(rc));
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  rt_slurp(out_path, out, out_size);
  rt_slurp(err_path, err, err_size);
  const char *name = strrchr(tool, '/');
  ck_assert_msg(WIFEXITED(status), "%s died (signal %d); stderr:\n%s", name ? name + 1 : tool,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0, err);
  return WEXITSTATUS(status);
}
