/* cuda.c - the CUDA driver API, loaded with dlopen at first use.
 *
 * cuda.h is included for types and prototypes only; the library never links
 * -lcuda.  Only cuGetProcAddress_v2 is taken with dlsym: every other entry
 * point is asked for by its base name with version 13000, which returns the
 * version cuda.h's macros name (cuMemAlloc -> cuMemAlloc_v2).  dlsym of a
 * plain legacy name would return the old 32-bit ABI instead.  Each table
 * field is declared with __typeof__ of the header's (macro-expanded) name,
 * so its prototype is exactly the one the header maps that name to. */
#undef CUDA_API_PER_THREAD_DEFAULT_STREAM
#include <cuda.h>

#include "frnn_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CUDA_API_VERSION 13000 /* version asked of cuGetProcAddress */
#define CUDA_MAX_DEVICES 64
#define DEFAULT_SHARED_LIMIT (48 * 1024)
#define JIT_LOG_SIZE 8192

/* Every driver function frnn calls.  Names are base names: p_##name pastes
 * the unexpanded name, __typeof__(name) sees the header's versioned one. */
#define CUDA_FUNCTIONS(X)                                                                \
  X(cuInit) X(cuDriverGetVersion) X(cuGetErrorName) X(cuGetErrorString)                  \
  X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) X(cuDeviceGetAttribute)          \
  X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain)                                        \
  X(cuCtxGetCurrent) X(cuCtxGetDevice) X(cuCtxPushCurrent) X(cuCtxPopCurrent)            \
  X(cuCtxSynchronize)                                                                    \
  X(cuModuleLoadDataEx) X(cuModuleUnload) X(cuModuleGetFunction)                         \
  X(cuLinkCreate) X(cuLinkAddData) X(cuLinkComplete) X(cuLinkDestroy)                    \
  X(cuFuncSetAttribute) X(cuFuncGetAttribute) X(cuLaunchKernel) X(cuLaunchKernelEx)     \
  X(cuMemAlloc) X(cuMemFree) X(cuMemGetInfo)                                             \
  X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync)              \
  X(cuMemsetD8) X(cuMemsetD8Async)                                                       \
  X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize)              \
  X(cuEventElapsedTime) X(cuStreamSynchronize)

typedef struct cuda_api {
#define CUDA_FIELD(name) __typeof__(name) *p_##name;
  CUDA_FUNCTIONS(CUDA_FIELD)
#undef CUDA_FIELD
} cuda_api;

/* Written once under pthread_once, read-only afterwards. */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static cuda_api api;
static frnn_status load_status = FRNN_E_NO_GPU;
static char load_error[512];
static int driver_version;

/* Primary contexts retained so far, by device ordinal (never released). */
static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext primary[CUDA_MAX_DEVICES];

/* "CUDA_ERROR_INVALID_PTX: a PTX JIT compilation failed" into buf. */
static const char *cu_describe(CUresult r, char *buf, size_t size) {
  const char *name = NULL, *text = NULL;
  if (api.p_cuGetErrorName && api.p_cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
  if (api.p_cuGetErrorString && api.p_cuGetErrorString(r, &text) != CUDA_SUCCESS) text = NULL;
  if (name)
    snprintf(buf, size, "%s: %s", name, text ? text : "(no description)");
  else
    snprintf(buf, size, "CUDA error %d", (int)r);
  return buf;
}

/* Record a driver failure: "<what>: CUDA_ERROR_xxx: <text>". */
static frnn_status cu_fail(frnn_ctx *ctx, CUresult r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static frnn_status cu_fail(frnn_ctx *ctx, CUresult r, const char *fmt, ...) {
  char what[512], desc[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return diag_fail(ctx, FRNN_E_CUDA, "%s: %s", what, cu_describe(r, desc, sizeof desc));
}

/* Same, with the JIT log (its last 2 KiB) on the lines after. */
static frnn_status cu_fail_log(frnn_ctx *ctx, CUresult r, char *log, size_t log_size,
                               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static frnn_status cu_fail_log(frnn_ctx *ctx, CUresult r, char *log, size_t log_size,
                               const char *fmt, ...) {
  char what[512], desc[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  log[log_size - 1] = 0;
  size_t n = strlen(log);
  while (n && (log[n - 1] == '\n' || log[n - 1] == ' ')) log[--n] = 0;
  const char *tail = n > 2048 ? log + (n - 2048) : log;
  return diag_fail(ctx, FRNN_E_CUDA, "%s: %s%s%s", what, cu_describe(r, desc, sizeof desc),
                   n ? "\n" : "", tail);
}

static void load_driver(void) {
  const char *path = getenv("FRNN_LIBCUDA");
  if (!path || !*path) path = "libcuda.so.1";
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    snprintf(load_error, sizeof load_error, "no CUDA driver: dlopen(%s) failed: %s", path,
             e ? e : "unknown error");
    return;
  }
  __typeof__(cuGetProcAddress) *get_proc;
  void *sym = dlsym(lib, "cuGetProcAddress_v2");
  if (!sym) {
    snprintf(load_error, sizeof load_error,
             "no usable CUDA driver: %s has no cuGetProcAddress_v2 (a driver older than CUDA "
             "12.0?)",
             path);
    dlclose(lib);
    return;
  }
  memcpy(&get_proc, &sym, sizeof sym);

  cuda_api t;
  memset(&t, 0, sizeof t);
  /* CUDA 13 gave cuCtxGetDevice and cuCtxSynchronize a context argument
   * (their _v2), but cuda.h still declares the unversioned names with the
   * old signature, which is what the table's types are: ask for those two
   * as of CUDA 12.0.  (Asking at 13000 crashed in cuCtxGetDevice_v2 on the
   * H100: it read a garbage context.) */
#define API_VERSION_OF(name)                                                             \
  (strcmp(name, "cuCtxGetDevice") == 0 || strcmp(name, "cuCtxSynchronize") == 0 ? 12000   \
                                                                                 : CUDA_API_VERSION)
#define CUDA_FETCH(name)                                                                 \
  {                                                                                      \
    void *fn = NULL;                                                                     \
    CUdriverProcAddressQueryResult q = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;             \
    CUresult r = get_proc(#name, &fn, API_VERSION_OF(#name), CU_GET_PROC_ADDRESS_DEFAULT, &q); \
    if (r != CUDA_SUCCESS || !fn || q != CU_GET_PROC_ADDRESS_SUCCESS) {                  \
      snprintf(load_error, sizeof load_error,                                            \
               "no usable CUDA driver: %s does not provide %s for CUDA %d (error %d, "   \
               "lookup status %d)",                                                      \
               path, #name, CUDA_API_VERSION, (int)r, (int)q);                          \
      dlclose(lib);                                                                      \
      return;                                                                            \
    }                                                                                    \
    memcpy(&t.p_##name, &fn, sizeof fn);                                                 \
  }
  CUDA_FUNCTIONS(CUDA_FETCH)
#undef CUDA_FETCH
  api = t; /* the driver stays loaded from here on: never dlclose it */

  char desc[256];
  int version = 0;
  if (api.p_cuDriverGetVersion(&version) == CUDA_SUCCESS) driver_version = version;
  CUresult r = api.p_cuInit(0);
  if (r != CUDA_SUCCESS) {
    snprintf(load_error, sizeof load_error, "CUDA driver %d.%d: cuInit failed: %s",
             version / 1000, version % 1000 / 10, cu_describe(r, desc, sizeof desc));
    return;
  }
  int count = 0;
  r = api.p_cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) {
    snprintf(load_error, sizeof load_error, "CUDA driver %d.%d: cuDeviceGetCount failed: %s",
             version / 1000, version % 1000 / 10, cu_describe(r, desc, sizeof desc));
    return;
  }
  if (count <= 0) {
    snprintf(load_error, sizeof load_error, "CUDA driver %d.%d: no CUDA device",
             version / 1000, version % 1000 / 10);
    return;
  }
  load_status = FRNN_OK;
}

frnn_status cuda_load(frnn_ctx *ctx) {
  pthread_once(&load_once, load_driver);
  if (load_status != FRNN_OK) return diag_fail(ctx, FRNN_E_NO_GPU, "%s", load_error);
  return FRNN_OK;
}

frnn_status frnn_gpu_available(frnn_ctx *ctx) { return cuda_load(ctx); }

/* ------------------------------------------------------------- contexts */
static frnn_status device_handle(frnn_ctx *ctx, int ordinal, CUdevice *dev) {
  int count = 0;
  CUresult r = api.p_cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count || ordinal >= CUDA_MAX_DEVICES)
    return diag_fail(ctx, FRNN_E_ARG, "CUDA device %d does not exist (%d device%s)", ordinal,
                     count, count == 1 ? "" : "s");
  r = api.p_cuDeviceGet(dev, ordinal);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuDeviceGet(%d)", ordinal);
  return FRNN_OK;
}

frnn_status cuda_enter(frnn_ctx *ctx, int device_ordinal, cuda_scope *scope) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!scope) return diag_fail(ctx, FRNN_E_ARG, "cuda_enter: null scope");
  scope->pushed = NULL;

  CUcontext cur = NULL;
  CUresult r = api.p_cuCtxGetCurrent(&cur);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuCtxGetCurrent");
  if (cur) {
    if (device_ordinal < 0) return FRNN_OK;
    CUdevice have;
    r = api.p_cuCtxGetDevice(&have);
    if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuCtxGetDevice");
    CUdevice want;
    if ((st = device_handle(ctx, device_ordinal, &want))) return st;
    if (have == want) return FRNN_OK;
  }

  int ordinal = device_ordinal < 0 ? 0 : device_ordinal;
  CUdevice dev;
  if ((st = device_handle(ctx, ordinal, &dev))) return st;
  pthread_mutex_lock(&primary_lock);
  CUcontext pc = primary[ordinal];
  if (!pc) {
    r = api.p_cuDevicePrimaryCtxRetain(&pc, dev);
    if (r == CUDA_SUCCESS)
      primary[ordinal] = pc;
    else
      pc = NULL;
  }
  pthread_mutex_unlock(&primary_lock);
  if (!pc) return cu_fail(ctx, r, "cuDevicePrimaryCtxRetain(device %d)", ordinal);
  r = api.p_cuCtxPushCurrent(pc);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuCtxPushCurrent(device %d)", ordinal);
  scope->pushed = pc;
  return FRNN_OK;
}

void cuda_leave(cuda_scope *scope) {
  if (!scope || !scope->pushed) return;
  CUcontext popped = NULL;
  api.p_cuCtxPopCurrent(&popped);
  scope->pushed = NULL;
}

frnn_status cuda_current_context(frnn_ctx *ctx, CUcontext *out) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "cuda_current_context: null output");
  CUresult r = api.p_cuCtxGetCurrent(out);
  return r == CUDA_SUCCESS ? FRNN_OK : cu_fail(ctx, r, "cuCtxGetCurrent");
}

/* -------------------------------------------------------------- modules */
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* PTX handed to the driver must be NUL-terminated: point *text at `ptx` if
 * it is within len bytes, else at a terminated copy in *copy (free it). */
static frnn_status ptx_text(frnn_ctx *ctx, const char *ptx, size_t len, const char **text,
                            char **copy) {
  *copy = NULL;
  *text = ptx;
  if (memchr(ptx, 0, len)) return FRNN_OK;
  if (!(*copy = malloc(len + 1))) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory");
  memcpy(*copy, ptx, len);
  (*copy)[len] = 0;
  *text = *copy;
  return FRNN_OK;
}

frnn_status cuda_module_load(frnn_ctx *ctx, const char *image, size_t len, int is_cubin,
                             CUmodule *out, double *load_ms) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!image || !out || len == 0)
    return diag_fail(ctx, FRNN_E_ARG, "cuda_module_load: null or empty image");
  *out = NULL;
  if (load_ms) *load_ms = 0;
  const char *data = image;
  char *copy = NULL;
  if (!is_cubin && (st = ptx_text(ctx, image, len, &data, &copy))) return st;

  char log[JIT_LOG_SIZE];
  log[0] = 0;
  CUjit_option opt[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *val[] = {log, (void *)(uintptr_t)sizeof log};
  double t0 = now_ms();
  CUresult r = api.p_cuModuleLoadDataEx(out, data, 2, opt, val);
  double t1 = now_ms();
  free(copy);
  if (r != CUDA_SUCCESS) {
    *out = NULL;
    return cu_fail_log(ctx, r, log, sizeof log, "cuModuleLoadDataEx(%s, %zu bytes)",
                       is_cubin ? "cubin" : "PTX", len);
  }
  if (load_ms) *load_ms = t1 - t0;
  return FRNN_OK;
}

void cuda_module_unload(CUmodule m) {
  if (m && load_status == FRNN_OK) api.p_cuModuleUnload(m);
}

frnn_status cuda_link_ptx_to_cubin(frnn_ctx *ctx, const char *ptx, size_t len, char **cubin,
                                   size_t *size) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!ptx || !cubin || !size || len == 0)
    return diag_fail(ctx, FRNN_E_ARG, "cuda_link_ptx_to_cubin: null or empty argument");
  *cubin = NULL;
  *size = 0;
  const char *text;
  char *copy;
  if ((st = ptx_text(ctx, ptx, len, &text, &copy))) return st;

  char log[JIT_LOG_SIZE]; /* must live until cuLinkDestroy */
  log[0] = 0;
  CUjit_option opt[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *val[] = {log, (void *)(uintptr_t)sizeof log};
  CUlinkState link = NULL;
  CUresult r = api.p_cuLinkCreate(2, opt, val, &link);
  if (r != CUDA_SUCCESS) {
    free(copy);
    return cu_fail(ctx, r, "cuLinkCreate");
  }
  const char *what = "cuLinkAddData";
  r = api.p_cuLinkAddData(link, CU_JIT_INPUT_PTX, (void *)text, strlen(text) + 1, "frnn.ptx",
                          0, NULL, NULL);
  void *image = NULL;
  size_t image_size = 0;
  if (r == CUDA_SUCCESS) {
    what = "cuLinkComplete";
    r = api.p_cuLinkComplete(link, &image, &image_size);
  }
  if (r == CUDA_SUCCESS) {
    /* The image belongs to the link state: copy it before destroying that. */
    *cubin = malloc(image_size ? image_size : 1);
    if (*cubin) {
      memcpy(*cubin, image, image_size);
      *size = image_size;
    }
  } else {
    st = cu_fail_log(ctx, r, log, sizeof log, "%s(PTX, %zu bytes)", what, len);
  }
  api.p_cuLinkDestroy(link);
  free(copy);
  if (st) return st;
  if (!*cubin)
    return diag_fail(ctx, FRNN_E_NOMEM, "out of memory for a %zu-byte cubin", image_size);
  return FRNN_OK;
}

frnn_status cuda_cubin_kind(frnn_ctx *ctx, int device_ordinal, char *buf, size_t size) {
  int major = 0, minor = 0;
  frnn_status st;
  if ((st = cuda_device_attribute(ctx, device_ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                  &major)) ||
      (st = cuda_device_attribute(ctx, device_ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                  &minor)))
    return st;
  if (!buf || size == 0) return diag_fail(ctx, FRNN_E_ARG, "cuda_cubin_kind: no buffer");
  int n = snprintf(buf, size, "cubin-sm_%d%d-driver%d", major, minor, driver_version);
  if (n < 0 || (size_t)n >= size)
    return diag_fail(ctx, FRNN_E_ARG, "cuda_cubin_kind: buffer too small");
  return FRNN_OK;
}

frnn_status cuda_function(frnn_ctx *ctx, CUmodule m, const char *name, CUfunction *out) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!m || !name || !out) return diag_fail(ctx, FRNN_E_ARG, "cuda_function: null argument");
  CUresult r = api.p_cuModuleGetFunction(out, m, name);
  if (r != CUDA_SUCCESS) {
    *out = NULL;
    return cu_fail(ctx, r, "cuModuleGetFunction(%s)", name);
  }
  return FRNN_OK;
}

frnn_status cuda_function_attribute(frnn_ctx *ctx, CUfunction f, int attribute, int *value) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!f || !value) return diag_fail(ctx, FRNN_E_ARG, "cuda_function_attribute: null argument");
  CUresult r = api.p_cuFuncGetAttribute(value, (CUfunction_attribute)attribute, f);
  return r == CUDA_SUCCESS ? FRNN_OK : cu_fail(ctx, r, "cuFuncGetAttribute(%d)", attribute);
}

frnn_status cuda_launch(frnn_ctx *ctx, CUfunction f, const char *kernel_name,
                        const unsigned grid[3], const unsigned block[3], unsigned cluster_x,
                        unsigned shared_bytes, CUstream stream, void **params) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  const char *kn = kernel_name ? kernel_name : "kernel";
  if (!f || !grid || !block)
    return diag_fail(ctx, FRNN_E_ARG, "cuda_launch(%s): null function or dimensions", kn);
  CUresult r;
  if (shared_bytes > DEFAULT_SHARED_LIMIT) {
    r = api.p_cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int)shared_bytes);
    if (r != CUDA_SUCCESS)
      return cu_fail(ctx, r, "cuFuncSetAttribute(%s, max dynamic shared = %u bytes)", kn,
                     shared_bytes);
  }
  if (cluster_x > 1) {
    if (grid[0] % cluster_x)
      return diag_fail(ctx, FRNN_E_ARG, "cuda_launch(%s): grid x %u is not a multiple of the cluster's %u",
                       kn, grid[0], cluster_x);
    CUlaunchAttribute attr;
    memset(&attr, 0, sizeof attr);
    attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = cluster_x;
    attr.value.clusterDim.y = 1;
    attr.value.clusterDim.z = 1;
    CUlaunchConfig cfg = {.gridDimX = grid[0], .gridDimY = grid[1], .gridDimZ = grid[2],
                          .blockDimX = block[0], .blockDimY = block[1], .blockDimZ = block[2],
                          .sharedMemBytes = shared_bytes, .hStream = stream, .attrs = &attr,
                          .numAttrs = 1};
    r = api.p_cuLaunchKernelEx(&cfg, f, params, NULL);
  } else {
    r = api.p_cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                             shared_bytes, stream, params, NULL);
  }
  if (r != CUDA_SUCCESS) {
    char desc[256];
    return diag_fail(ctx, FRNN_E_CUDA,
                     "%s(%s): %s [grid %u,%u,%u block %u,%u,%u cluster %u shared %u bytes]",
                     cluster_x > 1 ? "cuLaunchKernelEx" : "cuLaunchKernel", kn,
                     cu_describe(r, desc, sizeof desc), grid[0], grid[1], grid[2], block[0],
                     block[1], block[2], cluster_x > 1 ? cluster_x : 1, shared_bytes);
  }
  return FRNN_OK;
}

/* ------------------------------------------------------- memory, events */
/* Run one driver call after loading; on failure record "<name>: error". */
#define CU_CALL(ctx, call, ...)                                                          \
  do {                                                                                   \
    frnn_status st_ = cuda_load(ctx);                                                    \
    if (st_) return st_;                                                                 \
    CUresult r_ = (call);                                                                \
    if (r_ != CUDA_SUCCESS) return cu_fail(ctx, r_, __VA_ARGS__);                        \
    return FRNN_OK;                                                                      \
  } while (0)

frnn_status cuda_malloc(frnn_ctx *ctx, size_t bytes, CUdeviceptr *out) {
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "cuda_malloc: null output");
  *out = 0;
  CU_CALL(ctx, api.p_cuMemAlloc(out, bytes ? bytes : 1), "cuMemAlloc(%zu bytes)", bytes);
}

frnn_status cuda_free(frnn_ctx *ctx, CUdeviceptr p) {
  if (!p) return FRNN_OK;
  CU_CALL(ctx, api.p_cuMemFree(p), "cuMemFree");
}

frnn_status cuda_memcpy_htod(frnn_ctx *ctx, CUdeviceptr dst, const void *src, size_t bytes,
                             CUstream stream, int async) {
  if (bytes == 0) return FRNN_OK;
  CU_CALL(ctx,
          async ? api.p_cuMemcpyHtoDAsync(dst, src, bytes, stream)
                : api.p_cuMemcpyHtoD(dst, src, bytes),
          "cuMemcpyHtoD%s(%zu bytes)", async ? "Async" : "", bytes);
}

frnn_status cuda_memcpy_dtoh(frnn_ctx *ctx, void *dst, CUdeviceptr src, size_t bytes,
                             CUstream stream, int async) {
  if (bytes == 0) return FRNN_OK;
  CU_CALL(ctx,
          async ? api.p_cuMemcpyDtoHAsync(dst, src, bytes, stream)
                : api.p_cuMemcpyDtoH(dst, src, bytes),
          "cuMemcpyDtoH%s(%zu bytes)", async ? "Async" : "", bytes);
}

frnn_status cuda_memset_d8(frnn_ctx *ctx, CUdeviceptr dst, unsigned char value, size_t bytes,
                           CUstream stream, int async) {
  if (bytes == 0) return FRNN_OK;
  CU_CALL(ctx,
          async ? api.p_cuMemsetD8Async(dst, value, bytes, stream)
                : api.p_cuMemsetD8(dst, value, bytes),
          "cuMemsetD8%s(%zu bytes)", async ? "Async" : "", bytes);
}

frnn_status cuda_event_create(frnn_ctx *ctx, CUevent *out) {
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "cuda_event_create: null output");
  *out = NULL;
  CU_CALL(ctx, api.p_cuEventCreate(out, CU_EVENT_DEFAULT), "cuEventCreate");
}

void cuda_event_destroy(CUevent e) {
  if (e && load_status == FRNN_OK) api.p_cuEventDestroy(e);
}

frnn_status cuda_event_record(frnn_ctx *ctx, CUevent e, CUstream stream) {
  CU_CALL(ctx, api.p_cuEventRecord(e, stream), "cuEventRecord");
}

frnn_status cuda_event_sync(frnn_ctx *ctx, CUevent e) {
  CU_CALL(ctx, api.p_cuEventSynchronize(e), "cuEventSynchronize");
}

frnn_status cuda_event_elapsed(frnn_ctx *ctx, CUevent start, CUevent end, float *ms) {
  if (!ms) return diag_fail(ctx, FRNN_E_ARG, "cuda_event_elapsed: null output");
  CU_CALL(ctx, api.p_cuEventElapsedTime(ms, start, end), "cuEventElapsedTime");
}

frnn_status cuda_stream_sync(frnn_ctx *ctx, CUstream stream) {
  CU_CALL(ctx, api.p_cuStreamSynchronize(stream), "cuStreamSynchronize");
}

frnn_status cuda_ctx_sync(frnn_ctx *ctx) {
  CU_CALL(ctx, api.p_cuCtxSynchronize(), "cuCtxSynchronize");
}

frnn_status cuda_mem_get_info(frnn_ctx *ctx, size_t *free_bytes, size_t *total_bytes) {
  size_t f = 0, t = 0;
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  CUresult r = api.p_cuMemGetInfo(&f, &t);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuMemGetInfo");
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
  return FRNN_OK;
}

/* ------------------------------------------------------------- devices */
frnn_status cuda_device_attribute(frnn_ctx *ctx, int device_ordinal, int attribute, int *value) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!value) return diag_fail(ctx, FRNN_E_ARG, "cuda_device_attribute: null output");
  CUdevice dev;
  if ((st = device_handle(ctx, device_ordinal, &dev))) return st;
  CUresult r = api.p_cuDeviceGetAttribute(value, (CUdevice_attribute)attribute, dev);
  return r == CUDA_SUCCESS ? FRNN_OK
                           : cu_fail(ctx, r, "cuDeviceGetAttribute(device %d, attribute %d)",
                                     device_ordinal, attribute);
}

frnn_status cuda_device_info_get(frnn_ctx *ctx, int device_ordinal, cuda_device_info *out) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!out) return diag_fail(ctx, FRNN_E_ARG, "cuda_device_info_get: null output");
  memset(out, 0, sizeof *out);
  CUdevice dev;
  if ((st = device_handle(ctx, device_ordinal, &dev))) return st;
  CUresult r = api.p_cuDeviceGetName(out->name, (int)sizeof out->name - 1, dev);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuDeviceGetName(device %d)", device_ordinal);
  r = api.p_cuDeviceTotalMem(&out->total_mem, dev);
  if (r != CUDA_SUCCESS) return cu_fail(ctx, r, "cuDeviceTotalMem(device %d)", device_ordinal);
  struct {
    CUdevice_attribute a;
    int *v;
  } const want[] = {
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &out->cc_major},
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &out->cc_minor},
      {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &out->sm_count},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &out->max_shared_optin},
      {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, &out->regs_per_sm},
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    r = api.p_cuDeviceGetAttribute(want[i].v, want[i].a, dev);
    if (r != CUDA_SUCCESS)
      return cu_fail(ctx, r, "cuDeviceGetAttribute(device %d, attribute %d)", device_ordinal,
                     (int)want[i].a);
  }
  return FRNN_OK;
}

frnn_status cuda_device_count(frnn_ctx *ctx, int *count) {
  if (!count) return diag_fail(ctx, FRNN_E_ARG, "cuda_device_count: null output");
  *count = 0;
  CU_CALL(ctx, api.p_cuDeviceGetCount(count), "cuDeviceGetCount");
}

frnn_status cuda_driver_version(frnn_ctx *ctx, int *version) {
  frnn_status st = cuda_load(ctx);
  if (st) return st;
  if (!version) return diag_fail(ctx, FRNN_E_ARG, "cuda_driver_version: null output");
  *version = driver_version;
  return FRNN_OK;
}
