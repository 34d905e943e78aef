/* toolutil.h - what frnn-run, frnn-bench and frnn-dump-ptx share: option
 * parsing, loading a step with its error printed, sizes such as
 * "B=2,T=16,H=2,M=8,N=8", dtype names, host tensors shaped for a step's
 * ports, a seeded random source, statistics, and device buffers through the
 * library's driver layer (lib/cuda.c).
 *
 * Functions that can fail return 0 on success and -1 on failure, with a
 * message in err (err_size bytes), unless they say otherwise. */
#ifndef FRNN_TOOLUTIL_H
#define FRNN_TOOLUTIL_H

#include "frnn.h"
#include "npy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- options */
/* The exit status of a usage error. */
#define TU_EXIT_USAGE 2
/* Prints "<prog>: <message>" and a line "(<prog> --help for usage)" to
 * stderr; returns TU_EXIT_USAGE. */
int tu_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option `name` (e.g. "--out") with a value, at argv[*i]: "--out DIR" or
 * "--out=DIR".  Returns 1 and sets *value (advancing *i past a separate
 * value), 0 if argv[*i] is not this option, -1 if the value is missing (a
 * message naming the option is in err). */
int tu_opt(int argc, char **argv, int *i, const char *name, const char **value, char *err,
           size_t err_size);
/* "NAME=VALUE": copies NAME (a non-empty identifier) into name and points
 * *value after the '='. */
int tu_split_assign(const char *text, char *name, size_t name_size, const char **value);
/* A whole decimal (or 0x) integer. */
int tu_parse_i64(const char *text, int64_t *out);
/* "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16", "f64"/"float64". */
int tu_parse_dtype(const char *text, DLDataType *out);

/* Sizes "B=2,T=16,H=2,M=8,N=8": any subset in any order, each >= 1.
 * Letters not given keep their value in *sz; *given gets TU_SIZE_* bits. */
enum {
  TU_SIZE_B = 1,
  TU_SIZE_T = 2,
  TU_SIZE_H = 4,
  TU_SIZE_M = 8,
  TU_SIZE_N = 16,
  TU_SIZE_ALL = 31
};
int tu_parse_sizes(const char *text, frnn_sizes *sz, unsigned *given, char *err, size_t err_size);
/* "B=2 T=16 H=2 M=8 N=8" into buf. */
const char *tu_format_sizes(frnn_sizes sz, char *buf, size_t size);

/* ------------------------------------------------------------------ steps */
/* frnn_step_load; on failure prints "<prog>: <message>" to stderr and
 * returns NULL. */
frnn_step *tu_load_step(frnn_ctx *ctx, const char *prog, const char *path);
/* Shape of a port's tensor (SPEC section 3): inputs [B,T,H,m,n], states
 * [B,H,m,n], outputs [B,T,H,M] (class [M,1]) or [B,T,H] (class [1,1]).
 * Returns ndim. */
int tu_port_shape(const frnn_step *s, frnn_port_kind kind, int i, frnn_sizes sz, int64_t shape[5]);
/* Its shape written with letters: "[B,T,H,1,N]". */
const char *tu_port_shape_text(const frnn_step *s, frnn_port_kind kind, int i, char *buf,
                               size_t size);
/* The names of a port kind, comma-separated, into buf ("q, k, v"). */
const char *tu_port_names(const frnn_step *s, frnn_port_kind kind, char *buf, size_t size);
/* "(2, 16, 2, 1, 8)" */
const char *tu_format_shape(const DLTensor *t, char *buf, size_t size);

/* ----------------------------------------------------------------- random */
/* splitmix64: the same seed gives the same numbers on every machine. */
uint64_t tu_rng_next(uint64_t *state);
/* Fill a C-order host tensor with uniform values in [lo, hi), rounded to
 * its dtype. */
void tu_fill_uniform(htensor *x, uint64_t *state, double lo, double hi);

/* ------------------------------------------------------------- statistics */
typedef struct tu_stats {
  double mean, rms, maxabs;
  int64_t nonfinite; /* NaN or infinite elements (left out of the above) */
} tu_stats;
tu_stats tu_stats_of(const DLTensor *t);
/* ||a - b|| / ||b|| over all elements (same shapes); 0 when both are zero,
 * infinite when only b is. */
double tu_rel_err(const DLTensor *a, const DLTensor *b);

/* ------------------------------------------------------------------ files */
/* mkdir -p. */
int tu_mkdirs(const char *path, char *err, size_t err_size);

/* ------------------------------------------------------------------ CUDA */
/* A device (0, or the first of CUDA_VISIBLE_DEVICES) with its primary
 * context made current on this thread.  Only what the tools need. */
typedef struct tu_gpu tu_gpu;
int tu_gpu_open(tu_gpu **out, char *err, size_t err_size);
void tu_gpu_close(tu_gpu *g);
/* Device memory (bytes may be 0: then *ptr is NULL). */
int tu_gpu_alloc(tu_gpu *g, size_t bytes, void **ptr, char *err, size_t err_size);
void tu_gpu_free(tu_gpu *g, void *ptr);
int tu_gpu_upload(tu_gpu *g, void *dst, const void *src, size_t bytes, char *err, size_t err_size);
int tu_gpu_download(tu_gpu *g, void *dst, const void *src, size_t bytes, char *err,
                    size_t err_size);
/* Wait for all work on the context; reports a failed kernel. */
int tu_gpu_sync(tu_gpu *g, char *err, size_t err_size);

/* A device copy of a host tensor: same dtype, shape and strides (t.shape
 * and t.strides point into `host`, which must outlive it).  Allocates
 * host->bytes on the device and, with upload, copies the host data there. */
int tu_dtensor_new(tu_gpu *g, const htensor *host, bool upload, DLTensor *out, char *err,
                   size_t err_size);
/* Device data of d -> host->buf (host->bytes). */
int tu_dtensor_download(tu_gpu *g, const DLTensor *d, htensor *host, char *err, size_t err_size);
void tu_dtensor_free(tu_gpu *g, DLTensor *d);

#endif
