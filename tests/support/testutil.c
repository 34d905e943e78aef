/* testutil.c - see testutil.h. */
#include "testutil.h"

#include "frnn_internal.h" /* elem_load, elem_store */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <execinfo.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  chmod(path, 0700);
  return remove(path);
}
void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* On a crash, print the raw backtrace and where the executable is mapped, so
 * that addresses resolve (nm/addr2line) against the unstripped binary even
 * on a machine without gdb. */
static void crash_handler(int sig) {
  void *frames[64];
  int n = backtrace(frames, 64);
  char line[128];
  int len = snprintf(line, sizeof line, "\n*** signal %d; backtrace:\n", sig);
  write(2, line, (size_t)len);
  backtrace_symbols_fd(frames, n, 2);
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps) {
    char buf[512];
    for (int i = 0; i < 3 && fgets(buf, sizeof buf, maps); i++) write(2, buf, strlen(buf));
    fclose(maps);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

const DLDataType DT_F32 = {kDLFloat, 32, 1}, DT_BF16 = {kDLBfloat, 16, 1},
                 DT_F16 = {kDLFloat, 16, 1}, DT_F64 = {kDLFloat, 64, 1};

rng test_rng(const char *suite) {
  signal(SIGSEGV, crash_handler);
  signal(SIGBUS, crash_handler);
  signal(SIGABRT, crash_handler);
  const char *env = getenv("FRNN_TEST_SEED");
  uint64_t seed;
  if (env && *env)
    seed = strtoull(env, NULL, 0);
  else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
  }
  printf("%s seed: %llu (replay with FRNN_TEST_SEED=%llu)\n", suite, (unsigned long long)seed,
         (unsigned long long)seed);
  fflush(stdout);
  rng r = {seed ? seed : 1};
  return r;
}

uint64_t rng_next(rng *r) {
  /* splitmix64 */
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double rng_uniform(rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(rng_next(r) >> 11) * 0x1.0p-53);
}

double rng_normal(rng *r) {
  double u1 = rng_uniform(r, 1e-12, 1.0), u2 = rng_uniform(r, 0.0, 1.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static size_t dt_bytes(DLDataType dt) { return dt.bits / 8u; }

static void tt_init(ttensor *x, DLDataType dt, int ndim, const int64_t *shape) {
  memset(x, 0, sizeof *x);
  int64_t n = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    x->shape[i] = shape[i];
    x->strides[i] = n;
    n *= shape[i];
  }
  x->size = (size_t)(n ? n : 1) * dt_bytes(dt);
  x->buf = calloc(1, x->size);
  if (!x->buf) abort();
  x->t.data = x->buf;
  x->t.device = (DLDevice){kDLCPU, 0};
  x->t.ndim = ndim;
  x->t.dtype = dt;
  x->t.shape = x->shape;
  x->t.strides = x->strides;
  x->t.byte_offset = 0;
}

void tt_zeros(ttensor *x, DLDataType dt, int ndim, const int64_t *shape) {
  tt_init(x, dt, ndim, shape);
}

void tt_free(ttensor *x) {
  free(x->buf);
  x->buf = NULL;
}

int64_t tt_numel(const ttensor *x) {
  int64_t n = 1;
  for (int i = 0; i < x->t.ndim; i++) n *= x->t.shape[i];
  return n;
}

/* The library's conversions (lib/tensor.c), so tests and library round alike. */
static enum tdtype to_tdtype(DLDataType dt) {
  if (dt.bits == 64) return TD_F64;
  if (dt.bits == 32) return TD_F32;
  return dt.code == kDLBfloat ? TD_BF16 : TD_F16;
}

static double load_elem(const char *p, DLDataType dt) { return elem_load(p, to_tdtype(dt)); }

static void store_elem(char *p, DLDataType dt, double v) { elem_store(p, to_tdtype(dt), v); }

static char *elem_ptr(const ttensor *x, const int64_t *idx) {
  int64_t off = 0;
  for (int i = 0; i < x->t.ndim; i++) off += idx[i] * x->t.strides[i];
  return (char *)x->t.data + x->t.byte_offset + off * (int64_t)dt_bytes(x->t.dtype);
}

double tt_get(const ttensor *x, const int64_t *idx) { return load_elem(elem_ptr(x, idx), x->t.dtype); }
void tt_set(ttensor *x, const int64_t *idx, double v) { store_elem(elem_ptr(x, idx), x->t.dtype, v); }

/* Visit every multi-index of x's logical shape. */
static bool next_index(const ttensor *x, int64_t *idx) {
  for (int i = x->t.ndim - 1; i >= 0; i--) {
    if (++idx[i] < x->t.shape[i]) return true;
    idx[i] = 0;
  }
  return false;
}

void tt_random(ttensor *x, DLDataType dt, int ndim, const int64_t *shape, rng *r, double lo,
               double hi) {
  tt_init(x, dt, ndim, shape);
  if (tt_numel(x) == 0) return;
  int64_t idx[8] = {0};
  do tt_set(x, idx, rng_uniform(r, lo, hi));
  while (next_index(x, idx));
}

double tt_rel_err(const ttensor *a, const ttensor *b) {
  double num = 0, den = 0;
  int64_t idx[8] = {0};
  if (tt_numel(b) == 0) return 0;
  do {
    double x = tt_get(a, idx), y = tt_get(b, idx);
    num += (x - y) * (x - y);
    den += y * y;
  } while (next_index(b, idx));
  if (num != num) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

double tt_max_abs_diff(const ttensor *a, const ttensor *b) {
  double m = 0;
  int64_t idx[8] = {0};
  if (tt_numel(b) == 0) return 0;
  do {
    double d = fabs(tt_get(a, idx) - tt_get(b, idx));
    if (d != d) return INFINITY;
    if (d > m) m = d;
  } while (next_index(b, idx));
  return m;
}

const char *test_source_path(const char *rel) {
  static char buf[4096];
  const char *root = getenv("FRNN_SOURCE_DIR");
  snprintf(buf, sizeof buf, "%s/%s", root ? root : ".", rel);
  return buf;
}

static int by_name(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

int test_examples(char names[][TEST_NAME_MAX], int cap) {
  DIR *d = opendir(test_source_path("examples"));
  if (!d) return 0;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < cap;) {
    size_t len = strlen(e->d_name);
    if (len > 5 && len - 5 < TEST_NAME_MAX && strcmp(e->d_name + len - 5, ".frnn") == 0)
      snprintf(names[n++], TEST_NAME_MAX, "%.*s", (int)(len - 5), e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, TEST_NAME_MAX, by_name);
  return n;
}
