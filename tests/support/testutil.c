/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

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

static double load_elem(const char *p, DLDataType dt) {
  if (dt.code == kDLFloat && dt.bits == 64) return *(const double *)p;
  if (dt.code == kDLFloat && dt.bits == 32) return *(const float *)p;
  uint16_t h;
  memcpy(&h, p, 2);
  if (dt.code == kDLBfloat) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  /* IEEE half */
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
  return s ? -v : v;
}

static void store_elem(char *p, DLDataType dt, double v) {
  if (dt.code == kDLFloat && dt.bits == 64) {
    *(double *)p = v;
    return;
  }
  float f = (float)v;
  if (dt.code == kDLFloat && dt.bits == 32) {
    *(float *)p = f;
    return;
  }
  uint32_t u;
  memcpy(&u, &f, 4);
  uint16_t h;
  if (dt.code == kDLBfloat) {
    if (f != f)
      h = 0x7fc0;
    else
      h = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16); /* round to nearest even */
  } else {
    /* float -> half, round to nearest (via double arithmetic; test data only). */
    double a = fabs(v);
    uint16_t sign = v < 0 ? 0x8000 : 0;
    if (v != v)
      h = 0x7e00;
    else if (a >= 65520.0)
      h = sign | 0x7c00;
    else if (a < ldexp(1, -14)) {
      h = sign | (uint16_t)nearbyint(a * ldexp(1, 24));
    } else {
      int e;
      double m = frexp(a, &e); /* a = m * 2^e, m in [0.5,1) */
      int mant = (int)nearbyint(m * 2048.0); /* 11 bits incl. hidden */
      if (mant == 2048) {
        mant = 1024;
        e++;
      }
      h = sign | (uint16_t)(((e + 14) << 10) | (mant - 1024));
    }
  }
  memcpy(p, &h, 2);
}

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
