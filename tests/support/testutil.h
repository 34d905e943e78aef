/* testutil.h - what every test suite shares: a seeded random source whose
 * seed is printed (set FRNN_TEST_SEED to replay a run), host tensors in any
 * dtype, and the relative error of SPEC section 3. */
#ifndef FRNN_TESTUTIL_H
#define FRNN_TESTUTIL_H

#include "frnn.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct rng {
  uint64_t s;
} rng;

/* Seed from FRNN_TEST_SEED, else from the clock; prints "<suite> seed: N". */
rng test_rng(const char *suite);
uint64_t rng_next(rng *r);
double rng_uniform(rng *r, double lo, double hi);
double rng_normal(rng *r);

/* A host tensor that owns its buffer; shape and strides live inside. */
typedef struct ttensor {
  DLTensor t;
  int64_t shape[8];
  int64_t strides[8];
  void *buf;   /* allocation backing t.data */
  size_t size; /* bytes of buf */
} ttensor;

extern const DLDataType DT_F32, DT_BF16, DT_F16, DT_F64;

/* Remove a directory tree (made writable first); missing: nothing. */
void rm_rf(const char *path);

/* Contiguous tensor of this shape and dtype, filled with uniform(lo, hi). */
void tt_random(ttensor *x, DLDataType dt, int ndim, const int64_t *shape, rng *r, double lo,
               double hi);
/* Contiguous zero tensor. */
void tt_zeros(ttensor *x, DLDataType dt, int ndim, const int64_t *shape);
void tt_free(ttensor *x);
/* Element by multi-index (ndim indices), as double. */
double tt_get(const ttensor *x, const int64_t *idx);
void tt_set(ttensor *x, const int64_t *idx, double v);
/* Number of elements (of the logical shape). */
int64_t tt_numel(const ttensor *x);
/* ||a - b|| / ||b|| over all elements (same logical shapes). */
double tt_rel_err(const ttensor *a, const ttensor *b);
/* Largest |a - b| over all elements. */
double tt_max_abs_diff(const ttensor *a, const ttensor *b);

/* Path of a file under the source tree (FRNN_SOURCE_DIR); static buffer. */
const char *test_source_path(const char *rel);

/* The names of the .frnn files of examples/ without ".frnn", sorted, at most cap of them
 * (names longer than TEST_NAME_MAX - 1 skipped); how many. */
enum { TEST_NAME_MAX = 64 };
int test_examples(char names[][TEST_NAME_MAX], int cap);

#endif
