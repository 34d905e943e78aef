/* test_cuda_runtime.c - the CUDA driver layer (cuda.c) on a real GPU: a
 * hand-written PTX kernel loaded, launched and checked; the same PTX linked
 * to a cubin by the driver, cached, loaded and run; bad PTX reported with the
 * JIT log; launch errors named; dynamic shared memory above 48 KiB; scopes
 * and primary contexts; several threads at once.
 *
 * Without a GPU it exits 77 (CTest: skipped), but first it checks, always,
 * that a missing or wrong driver library gives FRNN_E_NO_GPU with a clear
 * message and that no call crashes then (each case in a child process, so
 * that its FRNN_LIBCUDA is the first load of the driver there). */
#include "frnn_internal.h"

#include <check.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* CUDA constants used below (this file does not include cuda.h). */
enum {
  ATTR_MAX_THREADS_PER_BLOCK = 1,     /* CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK */
  ATTR_MULTIPROCESSOR_COUNT = 16,     /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */
  ATTR_CC_MAJOR = 75,                 /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
  FUNC_ATTR_NUM_REGS = 4,             /* CU_FUNC_ATTRIBUTE_NUM_REGS */
};

/* x[i] += 1 for i < n; and the same through dynamic shared memory, touching
 * the last bytes of a block's shared_bytes (so a launch asking for more than
 * 48 KiB really needs the opt-in).  Checked with ptxas -arch=sm_90. */
static const char PTX[] =
    ".version 8.0\n"
    ".target sm_90\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry add_one(\n"
    "    .param .u64 p_x,\n"
    "    .param .u32 p_n\n"
    ")\n"
    "{\n"
    "    .reg .pred %p<2>;\n"
    "    .reg .b32 %r<6>;\n"
    "    .reg .f32 %f<3>;\n"
    "    .reg .b64 %rd<5>;\n"
    "\n"
    "    ld.param.u64 %rd1, [p_x];\n"
    "    ld.param.u32 %r1, [p_n];\n"
    "    mov.u32 %r2, %ctaid.x;\n"
    "    mov.u32 %r3, %ntid.x;\n"
    "    mov.u32 %r4, %tid.x;\n"
    "    mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "    setp.ge.u32 %p1, %r5, %r1;\n"
    "    @%p1 bra DONE;\n"
    "    cvta.to.global.u64 %rd2, %rd1;\n"
    "    mul.wide.u32 %rd3, %r5, 4;\n"
    "    add.s64 %rd4, %rd2, %rd3;\n"
    "    ld.global.f32 %f1, [%rd4];\n"
    "    add.f32 %f2, %f1, 0f3F800000;\n"
    "    st.global.f32 [%rd4], %f2;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n"
    "\n"
    ".extern .shared .align 16 .b8 smem[];\n"
    "\n"
    ".visible .entry add_one_shared(\n"
    "    .param .u64 p_x,\n"
    "    .param .u32 p_n,\n"
    "    .param .u32 p_shared_bytes\n"
    ")\n"
    "{\n"
    "    .reg .pred %p<2>;\n"
    "    .reg .b32 %r<10>;\n"
    "    .reg .f32 %f<4>;\n"
    "    .reg .b64 %rd<5>;\n"
    "\n"
    "    ld.param.u64 %rd1, [p_x];\n"
    "    ld.param.u32 %r1, [p_n];\n"
    "    ld.param.u32 %r6, [p_shared_bytes];\n"
    "    mov.u32 %r2, %ctaid.x;\n"
    "    mov.u32 %r3, %ntid.x;\n"
    "    mov.u32 %r4, %tid.x;\n"
    "    mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "    setp.ge.u32 %p1, %r5, %r1;\n"
    "    @%p1 bra DONE;\n"
    "    add.u32 %r7, %r4, 1;\n"
    "    shl.b32 %r7, %r7, 2;\n"
    "    sub.u32 %r8, %r6, %r7;\n"
    "    mov.u32 %r9, smem;\n"
    "    add.u32 %r9, %r9, %r8;\n"
    "    cvta.to.global.u64 %rd2, %rd1;\n"
    "    mul.wide.u32 %rd3, %r5, 4;\n"
    "    add.s64 %rd4, %rd2, %rd3;\n"
    "    ld.global.f32 %f1, [%rd4];\n"
    "    st.volatile.shared.f32 [%r9], %f1;\n"
    "    ld.volatile.shared.f32 %f2, [%r9];\n"
    "    add.f32 %f3, %f2, 0f3F800000;\n"
    "    st.global.f32 [%rd4], %f3;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n";

/* The same kernel with an undeclared register: ptxas rejects it. */
static const char BAD_PTX[] =
    ".version 8.0\n"
    ".target sm_90\n"
    ".address_size 64\n"
    ".visible .entry broken(.param .u64 p_x)\n"
    "{\n"
    "    .reg .f32 %f<3>;\n"
    "    .reg .b64 %rd<3>;\n"
    "    ld.param.u64 %rd1, [p_x];\n"
    "    cvta.to.global.u64 %rd2, %rd1;\n"
    "    ld.global.f32 %f1, [%rd2];\n"
    "    add.f32 %f2, %f1, %f_undeclared;\n"
    "    st.global.f32 [%rd2], %f2;\n"
    "    ret;\n"
    "}\n";

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ============================================== without a driver (always) */
/* Run fn in a child process whose driver library is `libcuda`; the child
 * exits 0 when every CHILD_CHECK held. */
#define CHILD_CHECK(cond)                                                         \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
      _exit(1);                                                                   \
    }                                                                             \
  } while (0)

static int run_child(const char *libcuda, void (*fn)(void)) {
  fflush(stdout);
  fflush(stderr);
  pid_t p = fork();
  if (p < 0) return -1;
  if (p == 0) {
    setenv("FRNN_LIBCUDA", libcuda, 1);
    fn();
    _exit(0);
  }
  int status;
  if (waitpid(p, &status, 0) != p) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void *gpu_available_thread(void *arg) {
  frnn_ctx *c;
  if (frnn_ctx_create(&c) != FRNN_OK) return (void *)1;
  intptr_t bad = frnn_gpu_available(c) != FRNN_E_NO_GPU || !strstr(frnn_ctx_error(c), "dlopen");
  frnn_ctx_destroy(c);
  return (void *)bad;
}

/* Every entry point fails with FRNN_E_NO_GPU, nothing crashes. */
static void every_call_says_no_gpu(frnn_ctx *c) {
  cuda_scope sc = {0};
  CUmodule m = NULL;
  CUfunction f = NULL;
  CUdeviceptr d = 0;
  CUevent e = NULL;
  char *cubin = NULL, kind[64];
  size_t size = 0, fr, tot;
  int v = -1;
  float ms;
  unsigned g[3] = {1, 1, 1};
  CHILD_CHECK(cuda_load(c) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_enter(c, 0, &sc) == FRNN_E_NO_GPU && sc.pushed == NULL);
  cuda_leave(&sc);
  CHILD_CHECK(cuda_module_load(c, PTX, sizeof PTX, 0, &m, NULL) == FRNN_E_NO_GPU && !m);
  CHILD_CHECK(cuda_link_ptx_to_cubin(c, PTX, sizeof PTX, &cubin, &size) == FRNN_E_NO_GPU);
  CHILD_CHECK(!cubin && size == 0);
  CHILD_CHECK(cuda_function(c, m, "add_one", &f) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_launch(c, f, "add_one", g, g, 1, 0, NULL, NULL) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_malloc(c, 16, &d) == FRNN_E_NO_GPU && d == 0);
  CHILD_CHECK(cuda_memcpy_htod(c, d, &v, 4, NULL, 0) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_memcpy_dtoh(c, &v, d, 4, NULL, 1) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_memset_d8(c, d, 0, 4, NULL, 0) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_event_create(c, &e) == FRNN_E_NO_GPU && !e);
  CHILD_CHECK(cuda_event_record(c, e, NULL) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_event_sync(c, e) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_event_elapsed(c, e, e, &ms) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_stream_sync(c, NULL) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_ctx_sync(c) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_device_attribute(c, 0, ATTR_CC_MAJOR, &v) == FRNN_E_NO_GPU);
  cuda_device_info info;
  CHILD_CHECK(cuda_device_info_get(c, 0, &info) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_device_count(c, &v) == FRNN_E_NO_GPU && v == 0);
  CHILD_CHECK(cuda_mem_get_info(c, &fr, &tot) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_driver_version(c, &v) == FRNN_E_NO_GPU);
  CHILD_CHECK(cuda_cubin_kind(c, 0, kind, sizeof kind) == FRNN_E_NO_GPU);
  CUcontext cur = NULL;
  CHILD_CHECK(cuda_current_context(c, &cur) == FRNN_E_NO_GPU);
  cuda_module_unload(NULL);
  cuda_event_destroy(NULL);
  CHILD_CHECK(cuda_free(c, 0) == FRNN_OK); /* freeing nothing needs no driver */
}

static void child_nonexistent(void) {
  frnn_ctx *c;
  CHILD_CHECK(frnn_ctx_create(&c) == FRNN_OK);
  CHILD_CHECK(frnn_gpu_available(c) == FRNN_E_NO_GPU);
  CHILD_CHECK(frnn_ctx_last_status(c) == FRNN_E_NO_GPU);
  const char *msg = frnn_ctx_error(c);
  printf("FRNN_LIBCUDA=/nonexistent: %s\n", msg);
  fflush(stdout);
  CHILD_CHECK(strstr(msg, "no CUDA driver") != NULL);
  CHILD_CHECK(strstr(msg, "dlopen(/nonexistent)") != NULL);
  CHILD_CHECK(strcmp(frnn_status_name(FRNN_E_NO_GPU), "no gpu") == 0);
  /* The answer is stable, and the same from several threads. */
  char first[4096];
  snprintf(first, sizeof first, "%s", msg);
  CHILD_CHECK(frnn_gpu_available(c) == FRNN_E_NO_GPU && strcmp(frnn_ctx_error(c), first) == 0);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    CHILD_CHECK(pthread_create(&t[i], NULL, gpu_available_thread, NULL) == 0);
  for (int i = 0; i < 4; i++) {
    void *bad;
    CHILD_CHECK(pthread_join(t[i], &bad) == 0 && bad == NULL);
  }
  every_call_says_no_gpu(c);
  every_call_says_no_gpu(NULL); /* no context to write to: still no crash */
  CHILD_CHECK(frnn_gpu_available(NULL) == FRNN_E_NO_GPU);
  frnn_ctx_destroy(c);
}

/* A library that exists but is no CUDA driver. */
static void child_not_a_driver(void) {
  frnn_ctx *c;
  CHILD_CHECK(frnn_ctx_create(&c) == FRNN_OK);
  CHILD_CHECK(frnn_gpu_available(c) == FRNN_E_NO_GPU);
  printf("FRNN_LIBCUDA=libm.so.6: %s\n", frnn_ctx_error(c));
  fflush(stdout);
  CHILD_CHECK(strstr(frnn_ctx_error(c), "cuGetProcAddress_v2") != NULL);
  every_call_says_no_gpu(c);
  frnn_ctx_destroy(c);
}

START_TEST(no_driver_library) { ck_assert_int_eq(run_child("/nonexistent", child_nonexistent), 0); }
END_TEST

START_TEST(library_is_not_a_driver) {
  ck_assert_int_eq(run_child("libm.so.6", child_not_a_driver), 0);
}
END_TEST

/* ======================================================= with a GPU */
static frnn_ctx *ctx;
static cuda_scope scope;

#define OK(call)                                                                  \
  do {                                                                            \
    frnn_status st_ = (call);                                                     \
    ck_assert_msg(st_ == FRNN_OK, "%s -> %s: %s", #call, frnn_status_name(st_),   \
                  frnn_ctx_error(ctx));                                           \
  } while (0)

static void gpu_setup(void) {
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  OK(cuda_enter(ctx, 0, &scope));
}

static void gpu_teardown(void) {
  cuda_leave(&scope);
  frnn_ctx_destroy(ctx);
  ctx = NULL;
}

/* Run add_one (or add_one_shared with shared_bytes) over n floats in
 * function f and check that x + 1 came back, in whatever context is
 * current.  No Check assertions (threads call it): returns NULL, or what
 * went wrong in err. */
static const char *add_one_error(frnn_ctx *c, CUfunction f, const char *name, unsigned n,
                                 unsigned shared_bytes, char *err, size_t size) {
  float *h = malloc(n * sizeof *h), *back = malloc(n * sizeof *back);
  CUdeviceptr d = 0;
  const char *res = NULL;
  if (!h || !back) {
    res = "out of memory";
    goto out;
  }
  for (unsigned i = 0; i < n; i++) h[i] = (float)i * 0.5f - 7.0f;
  void *params[] = {&d, &n, &shared_bytes};
  unsigned block[3] = {128, 1, 1}, grid[3] = {(n + 127) / 128, 1, 1};
  if (cuda_malloc(c, n * sizeof *h, &d) || cuda_memcpy_htod(c, d, h, n * sizeof *h, NULL, 0) ||
      cuda_launch(c, f, name, grid, block, 1, shared_bytes, NULL, params) ||
      cuda_stream_sync(c, NULL) || cuda_memcpy_dtoh(c, back, d, n * sizeof *back, NULL, 0)) {
    snprintf(err, size, "%s", frnn_ctx_error(c));
    res = err;
    goto out;
  }
  for (unsigned i = 0; i < n; i++)
    if (back[i] != h[i] + 1.0f) {
      snprintf(err, size, "%s: x[%u] = %g, want %g", name, i, back[i], h[i] + 1.0f);
      res = err;
      goto out;
    }
out:
  if (d && cuda_free(c, d) && !res) res = frnn_ctx_error(c);
  free(h);
  free(back);
  return res;
}

static void run_add_one(frnn_ctx *c, CUfunction f, const char *name, unsigned n,
                        unsigned shared_bytes) {
  char err[4096];
  const char *e = add_one_error(c, f, name, n, shared_bytes, err, sizeof err);
  ck_assert_msg(e == NULL, "%s(n=%u, shared=%u): %s", name, n, shared_bytes, e);
}

/* Checks inside threads: the first failure is recorded, then the thread
 * returns; the main thread asserts that none was recorded. */
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char thread_failure[4096];

#define T_CHECK(cond, c)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      pthread_mutex_lock(&fail_lock);                                             \
      if (!thread_failure[0])                                                     \
        snprintf(thread_failure, sizeof thread_failure, "%s:%d: %s (%s)",         \
                 __FILE__, __LINE__, #cond, (c) ? frnn_ctx_error(c) : "");        \
      pthread_mutex_unlock(&fail_lock);                                           \
      goto out;                                                                   \
    }                                                                             \
  } while (0)

START_TEST(device_and_driver) {
  int version = 0, count = 0;
  OK(cuda_driver_version(ctx, &version));
  OK(cuda_device_count(ctx, &count));
  ck_assert_int_ge(version, 12000);
  ck_assert_int_ge(count, 1);
  cuda_device_info info;
  OK(cuda_device_info_get(ctx, 0, &info));
  printf("device 0: %s, sm_%d%d, %d SMs, %d B shared/block opt-in, %d regs/SM, %.1f GiB; "
         "driver %d\n",
         info.name, info.cc_major, info.cc_minor, info.sm_count, info.max_shared_optin,
         info.regs_per_sm, (double)info.total_mem / (1 << 30), version);
  ck_assert(info.name[0] != 0);
  ck_assert_int_ge(info.cc_major, 5);
  ck_assert_int_gt(info.sm_count, 0);
  ck_assert_int_ge(info.max_shared_optin, 48 * 1024);
  ck_assert_int_gt(info.regs_per_sm, 0);
  ck_assert_uint_gt(info.total_mem, 0);
  int v;
  OK(cuda_device_attribute(ctx, 0, ATTR_MULTIPROCESSOR_COUNT, &v));
  ck_assert_int_eq(v, info.sm_count);
  OK(cuda_device_attribute(ctx, 0, ATTR_MAX_THREADS_PER_BLOCK, &v));
  ck_assert_int_ge(v, 256);
  ck_assert_int_eq(cuda_device_attribute(ctx, count, ATTR_CC_MAJOR, &v), FRNN_E_ARG);
  ck_assert(strstr(frnn_ctx_error(ctx), "does not exist") != NULL);
  size_t fr = 0, tot = 0;
  OK(cuda_mem_get_info(ctx, &fr, &tot));
  ck_assert_uint_gt(tot, 0);
  ck_assert_uint_le(fr, tot);
  char kind[64], want[64];
  OK(cuda_cubin_kind(ctx, 0, kind, sizeof kind));
  snprintf(want, sizeof want, "cubin-sm_%d%d-driver%d", info.cc_major, info.cc_minor, version);
  ck_assert_str_eq(kind, want);
  ck_assert_int_eq(cuda_cubin_kind(ctx, 0, kind, 8), FRNN_E_ARG);
}
END_TEST

START_TEST(ptx_load_and_launch) {
  CUmodule m;
  CUfunction f;
  double ms = -1;
  /* Not NUL-terminated within len: cuda.c must copy it. */
  OK(cuda_module_load(ctx, PTX, strlen(PTX), 0, &m, &ms));
  ck_assert(ms >= 0);
  printf("PTX module load: %.2f ms\n", ms);
  OK(cuda_function(ctx, m, "add_one", &f));
  int regs = 0;
  OK(cuda_function_attribute(ctx, f, FUNC_ATTR_NUM_REGS, &regs));
  ck_assert_int_gt(regs, 0);
  run_add_one(ctx, f, "add_one", 1000, 0); /* not a multiple of the block */
  run_add_one(ctx, f, "add_one", 1, 0);
  cuda_module_unload(m);
}
END_TEST

/* Copies, memset and launch all enqueued on the default stream, timed with
 * events, then one synchronisation. */
START_TEST(async_copies_and_events) {
  CUmodule m;
  CUfunction f;
  OK(cuda_module_load(ctx, PTX, sizeof PTX, 0, &m, NULL));
  OK(cuda_function(ctx, m, "add_one", &f));
  unsigned n = 1 << 20;
  float *h = malloc(n * sizeof *h);
  ck_assert_ptr_nonnull(h);
  CUdeviceptr d;
  CUevent e0, e1;
  OK(cuda_malloc(ctx, n * sizeof *h, &d));
  OK(cuda_event_create(ctx, &e0));
  OK(cuda_event_create(ctx, &e1));
  OK(cuda_memset_d8(ctx, d, 0, n * sizeof *h, NULL, 1)); /* 0.0f */
  OK(cuda_event_record(ctx, e0, NULL));
  void *params[] = {&d, &n};
  unsigned block[3] = {256, 1, 1}, grid[3] = {n / 256, 1, 1};
  for (int i = 0; i < 3; i++) OK(cuda_launch(ctx, f, "add_one", grid, block, 1, 0, NULL, params));
  OK(cuda_event_record(ctx, e1, NULL));
  OK(cuda_memcpy_dtoh(ctx, h, d, n * sizeof *h, NULL, 1));
  OK(cuda_event_sync(ctx, e1));
  OK(cuda_stream_sync(ctx, NULL));
  float ms = -1;
  OK(cuda_event_elapsed(ctx, e0, e1, &ms));
  printf("3 launches over %u floats: %.3f ms\n", n, ms);
  ck_assert(ms >= 0);
  for (unsigned i = 0; i < n; i += 4099) ck_assert_float_eq(h[i], 3.0f);
  ck_assert_float_eq(h[n - 1], 3.0f);
  /* Synchronous memset and copy back. */
  OK(cuda_memset_d8(ctx, d, 0xff, 8, NULL, 0));
  unsigned char bytes[12];
  OK(cuda_memcpy_dtoh(ctx, bytes, d, sizeof bytes, NULL, 0));
  for (int i = 0; i < 8; i++) ck_assert_int_eq(bytes[i], 0xff);
  ck_assert_int_eq(bytes[8], 0); /* 3.0f = 0x40400000, little endian */
  ck_assert_int_eq(bytes[11], 0x40);
  cuda_event_destroy(e0);
  cuda_event_destroy(e1);
  OK(cuda_free(ctx, d));
  OK(cuda_ctx_sync(ctx));
  free(h);
  cuda_module_unload(m);
}
END_TEST

/* The driver's linker turns the PTX into a cubin; the cubin goes through
 * the cache and loads and runs like the PTX. */
START_TEST(cubin_via_link_and_cache) {
  char dir[] = "/tmp/frnn-cuda-test-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("FRNN_CACHE_DIR", dir, 1);
  cache_clear_memory();

  char *cubin = NULL;
  size_t size = 0;
  double t0 = now_ms();
  OK(cuda_link_ptx_to_cubin(ctx, PTX, sizeof PTX, &cubin, &size));
  double link_ms = now_ms() - t0;
  ck_assert_uint_gt(size, 64);
  ck_assert(memcmp(cubin, "\177ELF", 4) == 0);

  char kind[64];
  OK(cuda_cubin_kind(ctx, 0, kind, sizeof kind));
  cache_key key = {0xadd0e, "test add_one", "sm_90", kind};
  OK(cache_put(ctx, &key, cubin, size));
  free(cubin);
  cache_clear_memory();
  char *payload;
  size_t len;
  cache_result how;
  OK(cache_get(ctx, &key, &payload, &len, &how));
  ck_assert_int_eq(how, CACHE_DISK);
  ck_assert_uint_eq(len, size);

  CUmodule mp, mc;
  CUfunction fp, fc;
  double ptx_ms = -1, cubin_ms = -1;
  OK(cuda_module_load(ctx, PTX, sizeof PTX, 0, &mp, &ptx_ms));
  OK(cuda_module_load(ctx, payload, len, 1, &mc, &cubin_ms));
  printf("module load: PTX %.3f ms (driver JIT, maybe from its ComputeCache), cubin %.3f ms; "
         "PTX -> cubin link %.3f ms, %zu bytes\n",
         ptx_ms, cubin_ms, link_ms, len);
  OK(cuda_function(ctx, mc, "add_one", &fc));
  OK(cuda_function(ctx, mp, "add_one", &fp));
  run_add_one(ctx, fc, "add_one", 777, 0);
  run_add_one(ctx, fp, "add_one", 777, 0);
  OK(cuda_function(ctx, mc, "add_one_shared", &fc));
  run_add_one(ctx, fc, "add_one_shared", 300, 4096);
  cuda_module_unload(mc);
  cuda_module_unload(mp);
  free(payload);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(bad_ptx_reports_the_log) {
  CUmodule m = (CUmodule)1;
  frnn_status st = cuda_module_load(ctx, BAD_PTX, sizeof BAD_PTX, 0, &m, NULL);
  const char *msg = frnn_ctx_error(ctx);
  printf("bad PTX: %s\n", msg);
  ck_assert_int_eq(st, FRNN_E_CUDA);
  ck_assert_ptr_null(m);
  ck_assert(strstr(msg, "cuModuleLoadDataEx(PTX") != NULL);
  ck_assert(strstr(msg, "CUDA_ERROR_") != NULL);
  ck_assert(strstr(msg, "%f_undeclared") != NULL); /* from the JIT log */

  char *cubin = (char *)1;
  size_t size = 1;
  st = cuda_link_ptx_to_cubin(ctx, BAD_PTX, sizeof BAD_PTX, &cubin, &size);
  msg = frnn_ctx_error(ctx);
  printf("bad PTX, link: %s\n", msg);
  ck_assert_int_eq(st, FRNN_E_CUDA);
  ck_assert_ptr_null(cubin);
  ck_assert_uint_eq(size, 0);
  ck_assert(strstr(msg, "cuLink") != NULL);
  ck_assert(strstr(msg, "%f_undeclared") != NULL);

  /* Garbage as a cubin (not ELF-like: the driver is not told its size). */
  static const char junk[64] = "this is neither a cubin nor PTX";
  st = cuda_module_load(ctx, junk, sizeof junk, 1, &m, NULL);
  printf("bad cubin: %s\n", frnn_ctx_error(ctx));
  ck_assert_int_eq(st, FRNN_E_CUDA);
  ck_assert(strstr(frnn_ctx_error(ctx), "cuModuleLoadDataEx(cubin") != NULL);

  /* The context is still good. */
  OK(cuda_module_load(ctx, PTX, sizeof PTX, 0, &m, NULL));
  cuda_module_unload(m);
}
END_TEST

START_TEST(launch_and_lookup_errors) {
  CUmodule m;
  CUfunction f;
  OK(cuda_module_load(ctx, PTX, sizeof PTX, 0, &m, NULL));
  ck_assert_int_eq(cuda_function(ctx, m, "no_such_kernel", &f), FRNN_E_CUDA);
  printf("missing kernel: %s\n", frnn_ctx_error(ctx));
  const char *want = "cuModuleGetFunction(no_such_kernel): CUDA_ERROR_NOT_FOUND: ";
  ck_assert(strncmp(frnn_ctx_error(ctx), want, strlen(want)) == 0);
  OK(cuda_function(ctx, m, "add_one", &f));
  CUdeviceptr d;
  unsigned n = 16;
  OK(cuda_malloc(ctx, 64, &d));
  void *params[] = {&d, &n};
  unsigned grid[3] = {1, 1, 1}, block[3] = {2048, 1, 1}; /* above 1024 threads */
  ck_assert_int_eq(cuda_launch(ctx, f, "add_one", grid, block, 1, 0, NULL, params), FRNN_E_CUDA);
  printf("bad launch: %s\n", frnn_ctx_error(ctx));
  want = "cuLaunchKernel(add_one): CUDA_ERROR_INVALID_VALUE: ";
  ck_assert(strncmp(frnn_ctx_error(ctx), want, strlen(want)) == 0);
  ck_assert(strstr(frnn_ctx_error(ctx), "block 2048,1,1") != NULL);
  /* Not sticky: the next launch works. */
  OK(cuda_free(ctx, d));
  run_add_one(ctx, f, "add_one", 100, 0);
  cuda_module_unload(m);
}
END_TEST

/* Dynamic shared memory above 48 KiB needs the opt-in cuda_launch does. */
START_TEST(large_dynamic_shared_memory) {
  cuda_device_info info;
  OK(cuda_device_info_get(ctx, 0, &info));
  CUmodule m;
  CUfunction f;
  OK(cuda_module_load(ctx, PTX, sizeof PTX, 0, &m, NULL));
  OK(cuda_function(ctx, m, "add_one_shared", &f));
  run_add_one(ctx, f, "add_one_shared", 1000, 48 * 1024);
  unsigned big = (unsigned)info.max_shared_optin;
  if (big > 100 * 1024) big = 100 * 1024;
  run_add_one(ctx, f, "add_one_shared", 1000, big);
  run_add_one(ctx, f, "add_one_shared", 1000, (unsigned)info.max_shared_optin);
  printf("dynamic shared memory: ran with %u and %d bytes per block\n", big,
         info.max_shared_optin);
  /* More than the device has: a clear error. */
  unsigned too_much = (unsigned)info.max_shared_optin + 1024, n = 10;
  CUdeviceptr d;
  OK(cuda_malloc(ctx, 64, &d));
  void *params[] = {&d, &n, &too_much};
  unsigned grid[3] = {1, 1, 1}, block[3] = {32, 1, 1};
  ck_assert_int_eq(cuda_launch(ctx, f, "add_one_shared", grid, block, 1, too_much, NULL, params),
                   FRNN_E_CUDA);
  printf("too much shared memory: %s\n", frnn_ctx_error(ctx));
  ck_assert(strstr(frnn_ctx_error(ctx), "add_one_shared") != NULL);
  ck_assert(strstr(frnn_ctx_error(ctx), "CUDA_ERROR_") != NULL);
  OK(cuda_free(ctx, d));
  cuda_module_unload(m);
}
END_TEST

/* Scopes: on a thread with no context, cuda_enter pushes the primary
 * context and cuda_leave pops it; nested scopes reuse the current context;
 * a module stays valid from one scope to the next (primary contexts are
 * retained for the process). */
static CUmodule kept_module;

static void *scope_thread(void *arg) {
  frnn_ctx *c = NULL;
  char err[4096];
  cuda_scope outer = {0}, inner = {0}, same = {0}, bad;
  CUcontext cur = (CUcontext)1;
  CUfunction f;
  T_CHECK(frnn_ctx_create(&c) == FRNN_OK, c);
  T_CHECK(cuda_current_context(c, &cur) == FRNN_OK && cur == NULL, c);
  T_CHECK(cuda_enter(c, 0, &outer) == FRNN_OK && outer.pushed != NULL, c);
  T_CHECK(cuda_current_context(c, &cur) == FRNN_OK && cur == outer.pushed, c);
  T_CHECK(cuda_enter(c, -1, &inner) == FRNN_OK && inner.pushed == NULL, c);
  T_CHECK(cuda_enter(c, 0, &same) == FRNN_OK && same.pushed == NULL, c);
  if (!kept_module) {
    T_CHECK(cuda_module_load(c, PTX, sizeof PTX, 0, &kept_module, NULL) == FRNN_OK, c);
  } else {
    T_CHECK(cuda_function(c, kept_module, "add_one", &f) == FRNN_OK, c);
    T_CHECK(add_one_error(c, f, "add_one", 50, 0, err, sizeof err) == NULL, c);
  }
  cuda_leave(&same);
  cuda_leave(&inner);
  T_CHECK(cuda_current_context(c, &cur) == FRNN_OK && cur == outer.pushed, c);
  cuda_leave(&outer);
  T_CHECK(cuda_current_context(c, &cur) == FRNN_OK && cur == NULL, c);
  T_CHECK(cuda_enter(c, 999, &bad) == FRNN_E_ARG, c);
  T_CHECK(strstr(frnn_ctx_error(c), "does not exist") != NULL, c);
out:
  cuda_leave(&same);
  cuda_leave(&inner);
  cuda_leave(&outer);
  if (c) frnn_ctx_destroy(c);
  return arg;
}

START_TEST(scopes_and_primary_context) {
  /* Fresh threads: this one holds the fixture's scope. */
  thread_failure[0] = 0;
  for (int i = 0; i < 2; i++) {
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, scope_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(!thread_failure[0], "%s", thread_failure);
  }
  /* Same primary context here: the module of the other thread works. */
  CUfunction f;
  ck_assert_ptr_nonnull(kept_module);
  OK(cuda_function(ctx, kept_module, "add_one", &f));
  run_add_one(ctx, f, "add_one", 64, 0);
  cuda_module_unload(kept_module);
  kept_module = NULL;
}
END_TEST

/* Several threads, each with its own context object, modules and buffers,
 * the first load of each module racing with the others. */
static void *worker(void *arg) {
  intptr_t id = (intptr_t)arg;
  frnn_ctx *c = NULL;
  char err[4096];
  cuda_scope sc = {0};
  CUmodule m = NULL;
  CUfunction f;
  T_CHECK(frnn_ctx_create(&c) == FRNN_OK, c);
  T_CHECK(cuda_enter(c, 0, &sc) == FRNN_OK, c);
  for (int rep = 0; rep < 5; rep++) {
    T_CHECK(cuda_module_load(c, PTX, sizeof PTX, 0, &m, NULL) == FRNN_OK, c);
    T_CHECK(cuda_function(c, m, "add_one", &f) == FRNN_OK, c);
    const char *e = add_one_error(c, f, "add_one", 1000 + (unsigned)id * 17, 0, err, sizeof err);
    T_CHECK(e == NULL, c);
    cuda_module_unload(m);
    m = NULL;
  }
out:
  cuda_module_unload(m);
  cuda_leave(&sc);
  if (c) frnn_ctx_destroy(c);
  return NULL;
}

START_TEST(threads) {
  thread_failure[0] = 0;
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, worker, (void *)i), 0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_join(t[i], NULL), 0);
  ck_assert_msg(!thread_failure[0], "%s", thread_failure);
}
END_TEST

/* ------------------------------------------------------------- suites */
static Suite *nogpu_suite(void) {
  Suite *s = suite_create("cuda without a driver");
  TCase *tc = tcase_create("nogpu");
  tcase_add_test(tc, no_driver_library);
  tcase_add_test(tc, library_is_not_a_driver);
  suite_add_tcase(s, tc);
  return s;
}

static Suite *gpu_suite(void) {
  Suite *s = suite_create("cuda runtime");
  TCase *tc = tcase_create("gpu");
  tcase_add_checked_fixture(tc, gpu_setup, gpu_teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, device_and_driver);
  tcase_add_test(tc, ptx_load_and_launch);
  tcase_add_test(tc, async_copies_and_events);
  tcase_add_test(tc, cubin_via_link_and_cache);
  tcase_add_test(tc, bad_ptx_reports_the_log);
  tcase_add_test(tc, launch_and_lookup_errors);
  tcase_add_test(tc, large_dynamic_shared_memory);
  tcase_add_test(tc, scopes_and_primary_context);
  tcase_add_test(tc, threads);
  suite_add_tcase(s, tc);
  return s;
}

static int run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  /* No fork per test: CUDA does not survive fork() once initialised, and
   * the no-driver cases fork by themselves before anything loads it. */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed;
}

int main(void) {
  int failed = run_suite(nogpu_suite());
  frnn_ctx *c;
  if (frnn_ctx_create(&c) != FRNN_OK) return EXIT_FAILURE;
  if (frnn_gpu_available(c) != FRNN_OK) {
    printf("GPU tests skipped: %s\n", frnn_ctx_error(c));
    frnn_ctx_destroy(c);
    return failed ? EXIT_FAILURE : 77;
  }
  frnn_ctx_destroy(c);
  failed += run_suite(gpu_suite());
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
