/* test_frnn_bench.c - the "# ranges:" facility (tools/util/ranges.c) and the
 * frnn-bench tool, run as a process ($FRNN_BUILD_DIR/frnn-bench):
 *
 * - ranges: parsing, every syntax error, the line in step text, defaults,
 *   the :n scaling and the broadcast shapes; every example has a line that
 *   parses and names only its own inputs and states;
 * - without a GPU (a driver path that does not exist) the tool says "no GPU"
 *   and exits 1; usage errors exit 2;
 * - through the fake driver ($FRNN_MOCK_LIBCUDA, which CTest sets to the build's tests/mock library; default
 *   /tmp/rt/libmockcuda.so: memory is host memory, kernels do nothing, so
 *   the numbers mean nothing): a row per example and exit 0, the JSON file,
 *   --forward-only, a failing model reported in its row while the others
 *   run (exit 1), and a driver without devices.
 *
 * When the fake driver is missing (CI) the tests that need it are left out
 * and, if the others pass, the suite exits 77 (CTest: skipped). */
#include "../../tools/util/ranges.c"

#include "frnn.h"
#include "runtool.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tool[512], mock[512], dir[64];

/* ---------------------------------------------------------------- ranges */
START_TEST(test_ranges_parse) {
  ranges r;
  char err[512];
  ck_assert_int_eq(
      ranges_parse("q=-1:1:n, k=-0.5:2e-1@h ,beta=0:1:n@t,B=1:2@g", &r, err, sizeof err), 0);
  ck_assert_int_eq(r.n, 4);
  ck_assert_str_eq(r.item[0].name, "q");
  ck_assert(r.item[0].lo == -1 && r.item[0].hi == 1 && r.item[0].scale_n && !r.item[0].bcast);
  ck_assert_str_eq(r.item[1].name, "k");
  ck_assert(r.item[1].lo == -0.5 && r.item[1].hi == 0.2 && !r.item[1].scale_n &&
            r.item[1].bcast == 'h');
  ck_assert(r.item[2].scale_n && r.item[2].bcast == 't');
  ck_assert(r.item[3].bcast == 'g');
  ck_assert_int_eq(ranges_parse("", &r, err, sizeof err), 0);
  ck_assert_int_eq(r.n, 0);
  ck_assert_int_eq(ranges_parse("   ", &r, err, sizeof err), 0);
  ck_assert_int_eq(r.n, 0);

  static const struct {
    const char *spec, *msg;
  } bad[] = {
      {"q", "expected NAME=LO:HI"},       {"=0:1", "expected NAME=LO:HI"},
      {"1q=0:1", "expected NAME=LO:HI"},  {"q-x=0:1", "expected NAME=LO:HI"},
      {"q=0", "expected q=LO:HI"},        {"q=0:", "expected q=LO:HI"},
      {"q=a:1", "expected q=LO:HI"},      {"q=0:1:m", "expected q=LO:HI"},
      {"q=0:1@x", "expected q=LO:HI"},    {"q=0:1@", "expected q=LO:HI"},
      {"q=0:1@hh", "expected q=LO:HI"},   {"q=0:1 junk", "expected q=LO:HI"},
      {"q=1:1", "finite LO < HI"},        {"q=2:1", "finite LO < HI"},
      {"q=-inf:1", "finite LO < HI"},     {"q=0:nan", "finite LO < HI"},
      {"q=0:1,,k=0:1", "empty item"},     {"q=0:1,", "empty item"},
      {"q=0:1,q=1:2", "'q' given twice"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err[0] = 0;
    ck_assert_msg(ranges_parse(bad[i].spec, &r, err, sizeof err) == -1, "'%s' parsed", bad[i].spec);
    ck_assert_msg(strstr(err, bad[i].msg), "'%s': message '%s' lacks '%s'", bad[i].spec, err,
                  bad[i].msg);
  }
}
END_TEST

START_TEST(test_ranges_text) {
  ranges r;
  bool found;
  char err[512];
  ck_assert_int_eq(ranges_from_text("# a model\nstep s(x[1,1]; S[1,1]) -> y[1,1]\n", &r, &found,
                                    err, sizeof err),
                   0);
  ck_assert(!found && r.n == 0);
  /* Indented, no blank after '#', CRLF, last line without newline. */
  ck_assert_int_eq(
      ranges_from_text("# x\r\n  #ranges: x=0:1@h\r\nstep", &r, &found, err, sizeof err), 0);
  ck_assert(found && r.n == 1 && r.item[0].bcast == 'h' && r.item[0].hi == 1);
  ck_assert_int_eq(ranges_from_text("step\n# ranges: x=0:1", &r, &found, err, sizeof err), 0);
  ck_assert(found && r.n == 1);
  /* "# ranges" must be followed by ':'; other comments are ignored. */
  ck_assert_int_eq(
      ranges_from_text("# ranges are nice\n# see ranges: below\n", &r, &found, err, sizeof err), 0);
  ck_assert(!found);
  ck_assert_int_eq(
      ranges_from_text("# a\n# ranges: x=0:1\n# ranges: y=0:1\n", &r, &found, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "line 3: a second '# ranges:' line"), "%s", err);
  ck_assert_int_eq(ranges_from_text("\n\n# ranges: x=1:0\n", &r, &found, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "line 3: ") && strstr(err, "LO < HI"), "%s", err);

  char path[128];
  snprintf(path, sizeof path, "%s/r.frnn", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("# one\n# ranges: x=0:1,x=1:2\n", f);
  fclose(f);
  ck_assert_int_eq(ranges_from_file(path, &r, &found, err, sizeof err), -1);
  char want[256];
  snprintf(want, sizeof want, "%s:2: ranges", path);
  ck_assert_msg(strstr(err, want) && strstr(err, "given twice"), "%s", err);
  snprintf(path, sizeof path, "%s/none.frnn", dir);
  ck_assert_int_eq(ranges_from_file(path, &r, &found, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "none.frnn") && strstr(err, "No such file"), "%s", err);
}
END_TEST

START_TEST(test_ranges_get) {
  ranges r;
  char err[512];
  ck_assert_int_eq(ranges_parse("q=-1:1:n,S=0.5:1,w=-2:-1@t", &r, err, sizeof err), 0);
  range_spec s = ranges_get(&r, "q", false, 12);
  ck_assert(fabs(s.lo + 0.5) < 1e-15 && fabs(s.hi - 0.5) < 1e-15 && s.scale_n);
  s = ranges_get(&r, "S", true, 12);
  ck_assert(s.lo == 0.5 && s.hi == 1);
  s = ranges_get(&r, "other", false, 12); /* defaults */
  ck_assert(s.lo == -1 && s.hi == 1 && !s.bcast && !s.scale_n);
  ck_assert_str_eq(s.name, "other");
  s = ranges_get(&r, "T", true, 12);
  ck_assert(s.lo == -0.1 && s.hi == 0.1);
  s = ranges_get(NULL, "q", false, 3);
  ck_assert(s.lo == -1 && s.hi == 1);
  s = ranges_get(&r, "w", false, 3);
  ck_assert(s.bcast == 't' && s.lo == -2);
  /* A name that is a prefix of a listed one is not that one. */
  ck_assert_int_eq(ranges_parse("qv=0:1", &r, err, sizeof err), 0);
  s = ranges_get(&r, "q", false, 3);
  ck_assert(s.lo == -1 && s.hi == 1);

  int64_t shape[5];
  ranges_input_shape(0, 2, 3, 4, 5, 6, shape);
  ck_assert(shape[0] == 2 && shape[1] == 3 && shape[2] == 4 && shape[3] == 5 && shape[4] == 6);
  ranges_input_shape('h', 2, 3, 4, 5, 1, shape);
  ck_assert(shape[0] == 1 && shape[1] == 1 && shape[2] == 4 && shape[3] == 5 && shape[4] == 1);
  ranges_input_shape('g', 2, 3, 4, 1, 6, shape);
  ck_assert(shape[0] == 2 && shape[1] == 3 && shape[2] == 1 && shape[4] == 6);
  ranges_input_shape('t', 2, 3, 4, 1, 1, shape);
  ck_assert(shape[0] == 2 && shape[1] == 1 && shape[2] == 4);
}
END_TEST

/* The example files, sorted; n_examples of them. */
static char examples[64][256];
static int n_examples;

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static void list_examples(void) {
  DIR *d = opendir(test_source_path("examples"));
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) && n_examples < 64) {
    size_t len = strlen(e->d_name);
    if (len > 5 && !strcmp(e->d_name + len - 5, ".frnn"))
      snprintf(examples[n_examples++], sizeof examples[0], "%.*s", (int)(len - 5), e->d_name);
  }
  closedir(d);
  qsort(examples, (size_t)n_examples, sizeof examples[0], cmp_name);
}

START_TEST(test_examples_have_ranges) {
  ck_assert_int_ge(n_examples, 15);
  frnn_ctx *ctx;
  ck_assert(frnn_ctx_create(&ctx) == FRNN_OK);
  for (int k = 0; k < n_examples; k++) {
    char rel[300], err[1024];
    snprintf(rel, sizeof rel, "examples/%.200s.frnn", examples[k]);
    const char *path = test_source_path(rel);
    frnn_step *s;
    ck_assert_msg(frnn_step_load(ctx, path, &s) == FRNN_OK, "%s", frnn_ctx_error(ctx));
    ranges r;
    bool found;
    ck_assert_msg(ranges_from_file(path, &r, &found, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(found, "%s has no '# ranges:' line", rel);
    for (int i = 0; i < r.n; i++) {
      int kind = -1;
      for (int kk = FRNN_PORT_INPUT; kk <= FRNN_PORT_STATE && kind < 0; kk++)
        for (int p = 0; p < frnn_step_port_count(s, (frnn_port_kind)kk); p++)
          if (!strcmp(frnn_step_port_name(s, (frnn_port_kind)kk, p), r.item[i].name))
            kind = kk;
      ck_assert_msg(kind >= 0, "%s: ranges name '%s', no input or state", rel, r.item[i].name);
      ck_assert_msg(kind == FRNN_PORT_INPUT || !r.item[i].bcast, "%s: state '%s' broadcast", rel,
                    r.item[i].name);
    }
    frnn_step_destroy(s);
  }
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------- the tool */
static char out_text[1 << 17], err_text[1 << 16];

/* Run frnn-bench with FRNN_LIBCUDA=libcuda (NULL: unset) and MOCK_CUDA=mode
 * (NULL: unset) and these arguments (NULL-terminated); stdout and stderr
 * land in out_text and err_text; returns the exit status. */
static int run_tool(const char *libcuda, const char *mode, const char *arg, ...) {
  if (libcuda)
    setenv("FRNN_LIBCUDA", libcuda, 1);
  else
    unsetenv("FRNN_LIBCUDA");
  if (mode)
    setenv("MOCK_CUDA", mode, 1);
  else
    unsetenv("MOCK_CUDA");
  setenv("TMPDIR", dir, 1); /* the tool's cache directories */
  va_list ap;
  va_start(ap, arg);
  int rc = rt_vrun(tool, dir, out_text, sizeof out_text, err_text, sizeof err_text, arg, ap);
  va_end(ap);
  return rc;
}

#define EXPECT_EXIT(want, libcuda, mode, ...)                                                      \
  do {                                                                                             \
    int rc_ = run_tool(libcuda, mode, __VA_ARGS__, NULL);                                          \
    ck_assert_msg(rc_ == (want), "exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", rc_, (want), \
                  out_text, err_text);                                                             \
  } while (0)

/* The table row of model `name` (a line starting with "name "), or NULL. */
static const char *row_of(const char *name) {
  size_t len = strlen(name);
  for (const char *p = out_text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (!strncmp(p, name, len) && p[len] == ' ')
      return p;
  return NULL;
}

static int occurrences(const char *text, const char *sub) {
  int n = 0;
  for (const char *p = strstr(text, sub); p; p = strstr(p + 1, sub))
    n++;
  return n;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/frnn-bench-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_no_gpu) {
  EXPECT_EXIT(1, "/nonexistent/libcuda.so.1", NULL, "--T", "4");
  ck_assert_msg(strstr(err_text, "frnn-bench: no GPU: ") &&
                    strstr(err_text, "/nonexistent/libcuda.so.1"),
                "%s", err_text);
  ck_assert_msg(!strstr(out_text, "model "), "a table without a GPU:\n%s", out_text);
}
END_TEST

START_TEST(test_usage) {
  EXPECT_EXIT(2, "/nonexistent/libcuda.so.1", NULL, "--bogus");
  ck_assert_msg(strstr(err_text, "unknown option '--bogus'"), "%s", err_text);
  EXPECT_EXIT(2, "/nonexistent/libcuda.so.1", NULL, "--reps", "0");
  ck_assert_msg(strstr(err_text, "--reps '0'"), "%s", err_text);
  EXPECT_EXIT(2, "/nonexistent/libcuda.so.1", NULL, "--dtype", "f64");
  EXPECT_EXIT(2, "/nonexistent/libcuda.so.1", NULL, "--check", "B=0");
  EXPECT_EXIT(2, "/nonexistent/libcuda.so.1", NULL, "--M");
  ck_assert_msg(strstr(err_text, "--M needs a value"), "%s", err_text);
  EXPECT_EXIT(0, "/nonexistent/libcuda.so.1", NULL, "--help");
  ck_assert_msg(strstr(out_text, "usage: frnn-bench") && strstr(out_text, "floor ms"), "%s",
                out_text);
}
END_TEST

START_TEST(test_mock_every_example) {
  char json[128];
  snprintf(json, sizeof json, "%s/bench.json", dir);
  EXPECT_EXIT(0, mock, NULL, "--T", "16", "--B", "1", "--H", "2", "--M", "8", "--N", "8", "--reps",
              "2", "--warmup", "1", "--json", json);
  ck_assert_msg(strstr(out_text, "frnn-bench: Mock H100"), "%s", out_text);
  ck_assert_msg(!strstr(out_text, "FAILED"), "%s", out_text);
  for (int k = 0; k < n_examples; k++) {
    const char *row = row_of(examples[k]);
    ck_assert_msg(row, "no row for %s:\n%s", examples[k], out_text);
    /* Timings are there (numbers, whatever the fake driver makes them). */
    ck_assert_msg(row[strspn(row + strlen(examples[k]), " ") + strlen(examples[k])] != '-',
                  "no fw time for %s:\n%s", examples[k], out_text);
  }
  /* Kernels do nothing in the fake driver: outputs stay NaN, which the
   * error column must show, not hide. */
  ck_assert_msg(occurrences(out_text, "nan!") == n_examples, "%s", out_text);
  static char js[1 << 17];
  rt_slurp(json, js, sizeof js);
  ck_assert_msg(strstr(js, "\"card\": \"Mock H100\"") && strstr(js, "\"driver_version\": 13000"),
                "%s", js);
  ck_assert_msg(strstr(js, "\"sizes\": {\"B\": 1, \"T\": 16, \"H\": 2, \"M\": 8, \"N\": 8}"), "%s",
                js);
  ck_assert_int_eq(occurrences(js, "\"ok\": true"), n_examples);
  /* The plan each model ran with is recorded (text and JSON). */
  /* nine examples run on the chunked kernels (lower_chunked.c), retention
   * guarded (its gamma is not an exp) and GSA's keys (a decay along M) */
  ck_assert_int_eq(occurrences(js, "\"plan\": \"fwd "), n_examples - 9);
  ck_assert_int_eq(occurrences(js, "\"plan\": \"chunked L="), 9);
  ck_assert_int_eq(occurrences(js, " guarded (recurrent where a decay is out of the chunked range)"), 2);
  ck_assert_msg(strstr(out_text, "plan mamba: fwd ") && strstr(out_text, "sums over M deferred") &&
                    strstr(out_text, "plan mlstm: fwd ") && strstr(out_text, "sums over M whole at every step"),
                "%s", out_text);
  for (int k = 0; k < n_examples; k++) {
    char want[300];
    snprintf(want, sizeof want, "\"model\": \"%.200s\"", examples[k]);
    ck_assert_msg(strstr(js, want), "%s missing in\n%s", want, js);
  }
  /* No cache directory is left behind. */
  char cmd[256];
  snprintf(cmd, sizeof cmd, "ls -d '%s'/frnn-bench-cache-* >/dev/null 2>&1", dir);
  ck_assert_msg(system(cmd) != 0, "a cache directory was left in %s", dir);
}
END_TEST

/* A backward split over thread-block clusters (FRNN_BWD_CLUSTER) launches
 * through cuLaunchKernelEx: at M = 128, N = 32 the plan takes 4 blocks per
 * head (16 warps of 8 rows, 4 per block); the fake driver checks that the
 * grid tiles into clusters and that every kernel parameter is passed. */
START_TEST(test_mock_clusters) {
  setenv("FRNN_BWD_CLUSTER", "8", 1);
  setenv("FRNN_CHUNKED", "0", 1); /* clusters split the recurrent backward */
  setenv("FRNN_MOCK_TRACE", "1", 1);
  char step[512];
  snprintf(step, sizeof step, "%s", test_source_path("examples/delta_rule.frnn"));
  EXPECT_EXIT(0, mock, NULL, step, "--T", "16", "--B", "1", "--H", "2", "--M",
              "128", "--N", "32", "--reps", "2", "--warmup", "1", "--check", "none");
  ck_assert_msg(strstr(err_text, "mock cuLaunchKernelEx(frnn_bwd): grid 4,2,1 cluster 4"), "%s", err_text);
  ck_assert_msg(strstr(out_text, "4 blocks/head (a cluster)"), "%s", out_text);
  ck_assert_msg(!strstr(out_text, "FAILED"), "%s", out_text);
}
END_TEST

START_TEST(test_mock_failures_continue) {
  char good[128], bad[128], missing[128];
  snprintf(good, sizeof good, "%s", test_source_path("examples/gla.frnn"));
  snprintf(bad, sizeof bad, "%s/bad.frnn", dir);
  snprintf(missing, sizeof missing, "%s/missing.frnn", dir);
  FILE *f = fopen(bad, "w");
  ck_assert_ptr_nonnull(f);
  fputs("# ranges: q=-1:1,zz=0:1\n"
        "step bad(q[1,N], v[M,1]; S[M,N]) -> y[M,1]\n"
        "  S = S + v * q\n"
        "  y = sum(S * q)\n",
        f);
  fclose(f);
  EXPECT_EXIT(1, mock, NULL, missing, bad, good, "--T", "8", "--B", "1", "--H", "1", "--M", "4",
              "--N", "4", "--reps", "2", "--warmup", "0", "--forward-only", "--check", "none");
  ck_assert_msg(row_of("missing") && strstr(out_text, "FAILED: load: ") &&
                    strstr(out_text, "missing.frnn"),
                "%s", out_text);
  ck_assert_msg(row_of("bad") && strstr(out_text, "'# ranges:' names 'zz'"), "%s", out_text);
  ck_assert_msg(row_of("gla") && occurrences(out_text, "FAILED") == 2, "%s", out_text);
  ck_assert_msg(strstr(out_text, "2 of 3 models failed"), "%s", out_text);
}
END_TEST

START_TEST(test_mock_forward_only_json_stdout) {
  EXPECT_EXIT(0, mock, NULL, test_source_path("examples/mlstm.frnn"), "--T", "5", "--B", "2", "--H",
              "3", "--M", "3", "--N", "5", "--dtype", "f32", "--reps", "3", "--warmup", "1",
              "--forward-only", "--check", "B=1,T=3,H=1,M=2,N=3", "--json", "-");
  /* The table goes to stderr, the JSON to stdout. */
  ck_assert_msg(out_text[0] == '{', "%s", out_text);
  ck_assert_msg(strstr(out_text, "\"forward_only\": true") &&
                    strstr(out_text, "\"dtype\": \"f32\"") &&
                    strstr(out_text, "\"fwbw_ms\": {\"median\": null"),
                "%s", out_text);
  ck_assert_msg(strstr(err_text, "mlstm "), "%s", err_text);
}
END_TEST

/* --lean: the context's lean backward mode, for every model and the first
 * calls' fresh contexts: the chunked plans store a state every 4 chunks,
 * and a guarded step's workspace (the larger of both paths') shrinks with
 * its recurrent fallback's lean plan too. */
START_TEST(test_mock_lean) {
  char step[2][512];
  snprintf(step[0], sizeof step[0], "%s", test_source_path("examples/mamba2.frnn"));
  snprintf(step[1], sizeof step[1], "%s", test_source_path("examples/gsa_keys.frnn"));
  double peak[2][2];
  for (int lean = 0; lean < 2; lean++) {
    if (lean)
      EXPECT_EXIT(0, mock, NULL, step[0], step[1], "--T", "256", "--B", "2", "--H", "2", "--M", "16", "--N", "16",
                  "--reps", "2", "--warmup", "1", "--check", "none", "--json", "-", "--lean");
    else
      EXPECT_EXIT(0, mock, NULL, step[0], step[1], "--T", "256", "--B", "2", "--H", "2", "--M", "16", "--N", "16",
                  "--reps", "2", "--warmup", "1", "--check", "none", "--json", "-");
    ck_assert_msg(strstr(out_text, lean ? "\"backward_mode\": \"lean\"" : "\"backward_mode\": \"fast\""), "%s",
                  out_text);
    ck_assert_int_eq(occurrences(out_text, lean ? "states every 4 chunks" : "states every 1 chunks"), 2);
    ck_assert_msg(!lean || strstr(err_text, ", lean backward"), "%s", err_text);
    const char *at = out_text;
    for (int k = 0; k < 2; k++) {
      at = strstr(at, "\"peak_gb\": ");
      ck_assert_ptr_nonnull(at);
      at += strlen("\"peak_gb\": ");
      peak[lean][k] = strtod(at, NULL);
    }
  }
  ck_assert_msg(peak[1][0] < peak[0][0] && peak[1][1] < peak[0][1], "%g %g / %g %g", peak[0][0], peak[1][0],
                peak[0][1], peak[1][1]);
}
END_TEST

START_TEST(test_mock_no_device) {
  EXPECT_EXIT(1, mock, "nodevice", "--T", "4");
  ck_assert_msg(strstr(err_text, "frnn-bench: no GPU: ") && strstr(err_text, "cuInit failed"), "%s",
                err_text);
}
END_TEST

int main(void) {
  int found = rt_find_tool("frnn-bench", tool, sizeof tool);
  if (found != 0) return found;
  const char *m = getenv("FRNN_MOCK_LIBCUDA");
  snprintf(mock, sizeof mock, "%s", m && *m ? m : "/tmp/rt/libmockcuda.so");
  bool have_mock = access(mock, R_OK) == 0;
  list_examples();
  Suite *su = suite_create("frnn_bench");
  TCase *tc = tcase_create("frnn_bench");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_ranges_parse);
  tcase_add_test(tc, test_ranges_text);
  tcase_add_test(tc, test_ranges_get);
  tcase_add_test(tc, test_examples_have_ranges);
  tcase_add_test(tc, test_no_gpu);
  tcase_add_test(tc, test_usage);
  if (have_mock) {
    tcase_add_test(tc, test_mock_every_example);
    tcase_add_test(tc, test_mock_failures_continue);
    tcase_add_test(tc, test_mock_clusters);
    tcase_add_test(tc, test_mock_forward_only_json_stdout);
    tcase_add_test(tc, test_mock_lean);
    tcase_add_test(tc, test_mock_no_device);
  } else {
    printf("%s is missing: the tests through the fake driver are left out\n", mock);
  }
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (failed)
    return EXIT_FAILURE;
  return have_mock ? EXIT_SUCCESS : 77;
}
