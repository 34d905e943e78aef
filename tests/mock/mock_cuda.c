/* A fake libcuda for plumbing tests on machines without a GPU: host memory
 * as device memory, add_one/add_one_shared emulated on the host, frnn's own
 * kernels (frnn_*) launched as no-ops.  Nothing computed through it means
 * anything: it exercises the host paths (loading, module cache, launches,
 * tools) and their error handling.  CMake builds it as libmockcuda.so and
 * tests find it through $FRNN_MOCK_LIBCUDA.  MOCK_CUDA env:
 * "nodevice" -> cuInit fails; "zero" -> 0 devices; "missing" -> no cuLinkCreate;
 * "versioned" -> refuses lookups with a version other than 13000;
 * "later_spills_less", "clusters_spill_less": local memory of functions
 * (m_cuModuleGetFunction).  MOCK_CUDA_LAUNCH_LOG=path: every launch's kernel
 * name appended there, a line each. */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *mode(void) { const char *m = getenv("MOCK_CUDA"); return m ? m : ""; }

struct CUctx_st { int dev; };
struct CUmod_st { char *image; int magic; struct CUfunc_st *fns[32]; int n_fns; };
struct CUfunc_st { char name[64]; int max_dyn; int shared_kernel; int n_params; int local_bytes; };
struct CUevent_st { double t; };
struct CUlinkState_st { char *log; size_t logsize; char *ptx; void *out; size_t outsize; };

static struct CUctx_st primary_ctx[2] = {{0}, {1}};
static __thread CUcontext stack[16];
static __thread int depth;
static int inited;

static CUresult m_cuInit(unsigned f) {
  if (!strcmp(mode(), "nodevice")) return CUDA_ERROR_NO_DEVICE;
  inited = 1; return CUDA_SUCCESS;
}
static CUresult m_cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
static CUresult m_cuGetErrorName(CUresult r, const char **s) {
  switch (r) {
  case CUDA_ERROR_NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; return 0;
  case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return 0;
  case CUDA_ERROR_INVALID_PTX: *s = "CUDA_ERROR_INVALID_PTX"; return 0;
  case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; return 0;
  case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; return 0;
  case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; return 0;
  case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; return 0;
  default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
  }
}
static CUresult m_cuGetErrorString(CUresult r, const char **s) {
  switch (r) {
  case CUDA_ERROR_NO_DEVICE: *s = "no CUDA-capable device is detected"; return 0;
  case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; return 0;
  case CUDA_ERROR_INVALID_PTX: *s = "a PTX JIT compilation failed"; return 0;
  case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; return 0;
  case CUDA_ERROR_INVALID_IMAGE: *s = "device kernel image is invalid"; return 0;
  case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; return 0;
  case CUDA_ERROR_INVALID_CONTEXT: *s = "invalid device context"; return 0;
  default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
  }
}
static CUresult need(void) { return inited ? 0 : CUDA_ERROR_NOT_INITIALIZED; }
static CUresult need_ctx(void) { return depth ? 0 : CUDA_ERROR_INVALID_CONTEXT; }
static CUresult m_cuDeviceGetCount(int *n) { *n = !strcmp(mode(), "zero") ? 0 : 1; return need(); }
static CUresult m_cuDeviceGet(CUdevice *d, int o) { if (o != 0) return CUDA_ERROR_INVALID_DEVICE; *d = o; return 0; }
static CUresult m_cuDeviceGetName(char *n, int len, CUdevice d) { snprintf(n, len, "Mock H100"); return 0; }
static CUresult m_cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) {
  switch (a) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
  return 0;
}
static CUresult m_cuDeviceTotalMem(size_t *b, CUdevice d) { *b = (size_t)80 << 30; return 0; }
static CUresult m_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = &primary_ctx[d]; return 0; }
static CUresult m_cuCtxGetCurrent(CUcontext *c) { *c = depth ? stack[depth - 1] : NULL; return need(); }
static CUresult m_cuCtxGetDevice(CUdevice *d) { if (!depth) return CUDA_ERROR_INVALID_CONTEXT; *d = stack[depth - 1]->dev; return 0; }
static CUresult m_cuCtxPushCurrent(CUcontext c) { stack[depth++] = c; return 0; }
static CUresult m_cuCtxPopCurrent(CUcontext *c) { if (!depth) return CUDA_ERROR_INVALID_CONTEXT; *c = stack[--depth]; return 0; }
static CUresult m_cuCtxSynchronize(void) { return need_ctx(); }

static void write_log(unsigned n, CUjit_option *o, void **v, const char *msg) {
  char *buf = NULL; size_t size = 0;
  for (unsigned i = 0; i < n; i++) {
    if (o[i] == CU_JIT_ERROR_LOG_BUFFER) buf = v[i];
    if (o[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) size = (size_t)(uintptr_t)v[i];
  }
  if (buf && size) snprintf(buf, size, "%s", msg);
}
static CUresult m_cuModuleLoadDataEx(CUmodule *m, const void *img, unsigned n, CUjit_option *o, void **v) {
  if (need_ctx()) return need_ctx();
  const char *s = img;
  if (!memcmp(s, "\177ELF", 4)) {
    if (!strstr(s + 4, ".entry")) return CUDA_ERROR_INVALID_IMAGE;
    s += 4;
  } else if (!strstr(s, ".version")) {
    return CUDA_ERROR_INVALID_IMAGE;
  } else if (strstr(s, "%f_undeclared")) {
    write_log(n, o, v, "ptxas application ptx input, line 11; error   : Unknown symbol '%f_undeclared'\n"
                       "ptxas fatal   : Ptx assembly aborted due to errors");
    return CUDA_ERROR_INVALID_PTX;
  }
  *m = calloc(1, sizeof **m);
  (*m)->image = strdup(s);
  (*m)->magic = 0x5eed;
  return 0;
}
static CUresult m_cuModuleUnload(CUmodule m) {
  if (m->magic != 0x5eed) abort();
  for (int i = 0; i < m->n_fns; i++) free(m->fns[i]);
  free(m->image);
  free(m);
  return 0;
}
static CUresult m_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
  char pat[100];
  snprintf(pat, sizeof pat, ".entry %s(", name);
  const char *entry = strstr(m->image, pat);
  if (!entry) return CUDA_ERROR_NOT_FOUND;
  /* Its parameter count, from the PTX signature, to check launches against. */
  int n_params = 0;
  for (const char *q = entry, *end = strchr(entry, ')'); end && (q = strstr(q, ".param")) && q < end; q++)
    n_params++;
  if (m->n_fns == 32) return CUDA_ERROR_OUT_OF_MEMORY;
  *f = calloc(1, sizeof **f); /* owned by the module, as the driver's are */
  m->fns[m->n_fns++] = *f;
  snprintf((*f)->name, sizeof (*f)->name, "%s", name);
  (*f)->n_params = n_params;
  (*f)->shared_kernel = strstr(name, "shared") != NULL;
  /* MOCK_CUDA=later_spills_less: each function looked up reports less local
   * memory than the one before (frnn keeps the backward that spills less).
   * MOCK_CUDA=clusters_spill_less: 1000 bytes, but 100 in a module that uses
   * distributed shared memory (mapa: a backward split over a cluster). */
  static int looked_up;
  (*f)->local_bytes = !strcmp(mode(), "later_spills_less")     ? 1000 - looked_up++
                      : !strcmp(mode(), "clusters_spill_less") ? (strstr(m->image, "mapa") ? 100 : 1000)
                                                               : 8;
  /* MOCK_CUDA=chain_spills: the chunked chain kernel spills 16 bytes where
   * it is built for 6 resident blocks, none for fewer; nothing else spills. */
  if (!strcmp(mode(), "chain_spills")) {
    const char *body = strchr(entry, '{');
    const char *bound = strstr(entry, ".minnctapersm 6");
    (*f)->local_bytes = strcmp(name, "frnn_ck_chain") ? 0 : bound && body && bound < body ? 16 : 0;
  }
  return 0;
}
static CUresult m_cuLinkCreate(unsigned n, CUjit_option *o, void **v, CUlinkState *st) {
  if (need_ctx()) return need_ctx();
  *st = calloc(1, sizeof **st);
  for (unsigned i = 0; i < n; i++) {
    if (o[i] == CU_JIT_ERROR_LOG_BUFFER) (*st)->log = v[i];
    if (o[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) (*st)->logsize = (size_t)(uintptr_t)v[i];
  }
  return 0;
}
static CUresult m_cuLinkAddData(CUlinkState st, CUjitInputType t, void *data, size_t size, const char *name,
                                unsigned n, CUjit_option *o, void **v) {
  if (t != CU_JIT_INPUT_PTX || ((char *)data)[size - 1] != 0) return CUDA_ERROR_INVALID_VALUE;
  if (strstr(data, "%f_undeclared")) {
    if (st->log) snprintf(st->log, st->logsize, "ptxas application ptx input, line 11; error   : Unknown symbol '%%f_undeclared'");
    return CUDA_ERROR_INVALID_PTX;
  }
  st->ptx = strdup(data);
  return 0;
}
static CUresult m_cuLinkComplete(CUlinkState st, void **out, size_t *size) {
  *size = 4 + strlen(st->ptx) + 1;
  st->out = malloc(*size);
  memcpy(st->out, "\177ELF", 4);
  memcpy((char *)st->out + 4, st->ptx, *size - 4);
  *out = st->out;
  return 0;
}
static CUresult m_cuLinkDestroy(CUlinkState st) { free(st->ptx); free(st->out); free(st); return 0; }
static CUresult m_cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) {
  if (a != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES || v > 232448) return CUDA_ERROR_INVALID_VALUE;
  f->max_dyn = v; return 0;
}
static CUresult m_cuFuncGetAttribute(int *v, CUfunction_attribute a, CUfunction f) {
  *v = a == CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES ? f->local_bytes : 8;
  return 0;
}
static CUresult m_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned sh, CUstream s, void **params, void **extra) {
  if (need_ctx()) return need_ctx();
  if ((unsigned long)bx * by * bz > 1024) return CUDA_ERROR_INVALID_VALUE;
  if (sh > 48 * 1024 && (int)sh > f->max_dyn) return CUDA_ERROR_INVALID_VALUE;
  const char *log_path = getenv("MOCK_CUDA_LAUNCH_LOG"); /* a file: each launched kernel's name, a line */
  FILE *log = log_path && *log_path ? fopen(log_path, "a") : NULL;
  if (log) fprintf(log, "%s\n", f->name), fclose(log);
  if (strncmp(f->name, "frnn_", 5) == 0) {
    /* frnn's kernels do nothing here, but every parameter the PTX declares
     * must have been passed: the host/kernel ABI is checked without a GPU.
     * (The host's array is zero-filled past what it set: a missing one reads
     * as NULL.) */
    if (!params) return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < f->n_params; i++) {
      if (!params[i]) {
        fprintf(stderr, "mock cuLaunchKernel(%s): parameter %d of %d not passed\n", f->name, i,
                f->n_params);
        return CUDA_ERROR_INVALID_VALUE;
      }
      volatile char c = *(volatile const char *)params[i];
      (void)c;
    }
    return 0;
  }
  float *x = (float *)(uintptr_t)*(CUdeviceptr *)params[0];
  unsigned n = *(unsigned *)params[1];
  if (f->shared_kernel && *(unsigned *)params[2] != sh) abort();
  for (unsigned long i = 0; i < (unsigned long)gx * bx && i < n; i++) x[i] += 1.0f;
  return 0;
}
/* Clusters: the grid must tile into them, at most 8 blocks (portable size). */
static CUresult m_cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  if (!c || (c->numAttrs && !c->attrs)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < c->numAttrs; i++) {
    if (c->attrs[i].id != CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION) return CUDA_ERROR_INVALID_VALUE;
    unsigned x = c->attrs[i].value.clusterDim.x, y = c->attrs[i].value.clusterDim.y,
             z = c->attrs[i].value.clusterDim.z;
    if (!x || !y || !z || x * y * z > 8 || c->gridDimX % x || c->gridDimY % y || c->gridDimZ % z)
      return CUDA_ERROR_INVALID_CLUSTER_SIZE;
  }
  if (getenv("FRNN_MOCK_TRACE") && c->numAttrs)
    fprintf(stderr, "mock cuLaunchKernelEx(%s): grid %u,%u,%u cluster %u shared %u\n", f->name,
            c->gridDimX, c->gridDimY, c->gridDimZ, c->attrs[0].value.clusterDim.x, c->sharedMemBytes);
  return m_cuLaunchKernel(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY,
                          c->blockDimZ, c->sharedMemBytes, c->hStream, params, extra);
}
static CUresult m_cuMemAlloc(CUdeviceptr *p, size_t n) { if (need_ctx()) return need_ctx(); *p = (CUdeviceptr)(uintptr_t)malloc(n); return 0; }
static CUresult m_cuMemFree(CUdeviceptr p) { free((void *)(uintptr_t)p); return 0; }
static CUresult m_cuMemGetInfo(size_t *f, size_t *t) { if (need_ctx()) return need_ctx(); *f = 1 << 30; *t = (size_t)80 << 30; return 0; }
static CUresult m_cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) { memcpy((void *)(uintptr_t)d, s, n); return 0; }
static CUresult m_cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) { memcpy(d, (void *)(uintptr_t)s, n); return 0; }
static CUresult m_cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st) { return m_cuMemcpyHtoD(d, s, n); }
static CUresult m_cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st) { return m_cuMemcpyDtoH(d, s, n); }
static CUresult m_cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)(uintptr_t)d, v, n); return 0; }
static CUresult m_cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) { return m_cuMemsetD8(d, v, n); }
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6; }
static CUresult m_cuEventCreate(CUevent *e, unsigned f) { *e = calloc(1, sizeof **e); return 0; }
static CUresult m_cuEventDestroy(CUevent e) { free(e); return 0; }
static CUresult m_cuEventRecord(CUevent e, CUstream s) { e->t = now(); return 0; }
static CUresult m_cuEventSynchronize(CUevent e) { return 0; }
static CUresult m_cuEventElapsedTime(float *ms, CUevent a, CUevent b) { *ms = (float)(b->t - a->t); return 0; }
static CUresult m_cuStreamSynchronize(CUstream s) { return need_ctx(); }

static const struct { const char *name; void *fn; } table[] = {
#define E(n) {#n, (void *)m_##n},
  E(cuInit) E(cuDriverGetVersion) E(cuGetErrorName) E(cuGetErrorString) E(cuDeviceGetCount) E(cuDeviceGet)
  E(cuDeviceGetName) E(cuDeviceGetAttribute) E(cuDeviceTotalMem) E(cuDevicePrimaryCtxRetain) E(cuCtxGetCurrent)
  E(cuCtxGetDevice) E(cuCtxPushCurrent) E(cuCtxPopCurrent) E(cuCtxSynchronize) E(cuModuleLoadDataEx)
  E(cuModuleUnload) E(cuModuleGetFunction) E(cuLinkCreate) E(cuLinkAddData) E(cuLinkComplete) E(cuLinkDestroy)
  E(cuFuncSetAttribute) E(cuFuncGetAttribute) E(cuLaunchKernel) E(cuLaunchKernelEx) E(cuMemAlloc) E(cuMemFree) E(cuMemGetInfo)
  E(cuMemcpyHtoD) E(cuMemcpyDtoH) E(cuMemcpyHtoDAsync) E(cuMemcpyDtoHAsync) E(cuMemsetD8) E(cuMemsetD8Async)
  E(cuEventCreate) E(cuEventDestroy) E(cuEventRecord) E(cuEventSynchronize) E(cuEventElapsedTime)
  E(cuStreamSynchronize)
};

CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *q) {
  *pfn = NULL;
  if ((ver != 13000 && ver != 12000) || flags != 0) { *q = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT; return CUDA_ERROR_NOT_FOUND; }
  if (!strcmp(mode(), "missing") && !strcmp(sym, "cuLinkCreate")) { *q = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND; return CUDA_ERROR_NOT_FOUND; }
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (!strcmp(table[i].name, sym)) { *pfn = table[i].fn; if (q) *q = CU_GET_PROC_ADDRESS_SUCCESS; return 0; }
  if (q) *q = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return CUDA_ERROR_NOT_FOUND;
}
