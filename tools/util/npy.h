/* npy.h - host tensors and NumPy .npy files, for the tools.
 *
 * A host tensor is a DLTensor on the CPU that owns its buffer.  .npy files of
 * format versions 1.0, 2.0 and 3.0 are read and written, little-endian:
 *
 *   descr          dtype      note
 *   '<f4'          float32
 *   '<f8'          float64
 *   '<f2'          float16
 *   '<V2', 'bfloat16'  bfloat16   '<V2' is what np.save writes for an
 *                                 ml_dtypes bfloat16 array; read it back in
 *                                 NumPy with a.view(ml_dtypes.bfloat16)
 *
 * any ndim from 0 to NPY_MAX_NDIM, C or Fortran order (Fortran order is kept
 * as strides, not copied).  Files are always written in C order; bfloat16 is
 * written as '<V2'.  Every error message names the file. */
#ifndef FRNN_NPY_H
#define FRNN_NPY_H

#include <dlpack/dlpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_NDIM 8

/* A CPU tensor owning its buffer.  t.shape and t.strides point into this
 * struct: never copy it by value; pass the pointer. */
typedef struct htensor {
  DLTensor t; /* kDLCPU; byte_offset 0 */
  int64_t shape[NPY_MAX_NDIM];
  int64_t strides[NPY_MAX_NDIM]; /* in elements */
  void *buf;                     /* == t.data, owned */
  size_t bytes;                  /* size of buf (at least 1) */
} htensor;

extern const DLDataType NPY_F32, NPY_F64, NPY_F16, NPY_BF16;

/* float32, float64, float16 or bfloat16 (one lane)? */
bool npy_dtype_supported(DLDataType dt);
bool npy_dtype_equal(DLDataType a, DLDataType b);
/* "float32", "float64", "float16", "bfloat16", else "unsupported". */
const char *npy_dtype_name(DLDataType dt);
size_t npy_dtype_size(DLDataType dt);

/* One element at p, as double; and stored from double, rounding to nearest
 * even (exactly, without double rounding); NaN stays NaN. */
double npy_elem_load(const void *p, DLDataType dt);
void npy_elem_store(void *p, DLDataType dt, double v);

/* A zeroed C-order tensor; NULL if ndim is out of range, a dimension is
 * negative, the size overflows or memory runs out. */
htensor *ht_new(DLDataType dt, int ndim, const int64_t *shape);
void ht_free(htensor *x);
/* Number of elements of t's shape (1 for ndim 0). */
int64_t npy_numel(const DLTensor *t);
/* Element k (in C order over t's logical shape, any strides) as double. */
double npy_get(const DLTensor *t, int64_t k);
/* C-order copy of a host tensor (any strides) in dtype dt; NULL on failure. */
htensor *ht_convert(const DLTensor *src, DLDataType dt);

/* Read a .npy file.  On failure returns -1, writes a message naming `path`
 * into err (err_size bytes) and leaves *out NULL. */
int npy_read(const char *path, htensor **out, char *err, size_t err_size);
/* The same from bytes in memory; `name` stands for the file in messages. */
int npy_parse(const char *name, const void *data, size_t size, htensor **out, char *err,
              size_t err_size);
/* Write any host tensor (supported dtype, any strides) in C order. */
int npy_write(const char *path, const DLTensor *t, char *err, size_t err_size);

#endif
