/* ranges.h - the ranges of random values that make a step well-conditioned,
 * as one comment line of its .frnn file:
 *
 *   # ranges: q=-1:1:n,k=-1:1:n,beta=0:1,A=-1:-0.1@h
 *
 * Items are separated by commas (spaces around them are allowed); each is
 *
 *   NAME=LO:HI[:n][@h|@g|@t]
 *
 * for an input or state called NAME: values uniform in [LO, HI); ":n"
 * scales LO and HI by sqrt(3/N) (keys of unit norm on average, whatever N);
 * "@h" makes an input per head ([1,1,H,m,n]), "@g" shared by the heads
 * ([B,T,1,m,n]), "@t" constant in time ([B,1,H,m,n]).  Unlisted inputs get
 * [-1, 1), unlisted states [-0.1, 0.1), neither broadcast.  At most one
 * "# ranges:" line per file.
 *
 * Used by frnn-bench and tests/gpu/test_gpu_models.c.  Depends on the C
 * library (and the header errbuf.h) only, so that a test can compile it in
 * (#include "ranges.c").  Functions that can fail return 0 on success, -1 on failure
 * with a message in err (err_size bytes; errbuf.h). */
#ifndef FRNN_RANGES_H
#define FRNN_RANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RANGES_MAX_ITEMS 64
#define RANGES_NAME_MAX 64

typedef struct range_spec {
  char name[RANGES_NAME_MAX];
  double lo, hi; /* ranges_get: already scaled when scale_n */
  bool scale_n;  /* ":n" */
  char bcast;    /* 0, 'h', 'g' or 't' */
} range_spec;

typedef struct ranges {
  int n;
  range_spec item[RANGES_MAX_ITEMS];
} ranges;

/* Parse a spec ("q=-1:1:n,beta=0:1"; "" gives no items).  Checks the
 * syntax, LO < HI (both finite) and that no name is given twice. */
int ranges_parse(const char *spec, ranges *out, char *err, size_t err_size);

/* The "# ranges:" line of step text (a line whose first non-blank byte is
 * '#', then optional blanks, then "ranges:"), parsed into *out.  *found
 * says whether there was one (without it *out has no items). */
int ranges_from_text(const char *text, ranges *out, bool *found, char *err, size_t err_size);
/* The same for a file (messages name the file). */
int ranges_from_file(const char *path, ranges *out, bool *found, char *err, size_t err_size);

/* The range of the input or state `name` (defaults when unlisted), with LO
 * and HI scaled by sqrt(3/N) when the item says ":n". */
range_spec ranges_get(const ranges *r, const char *name, bool is_state, int64_t N);

/* The broadcast letter's shape of an input of class (m, n):
 * shape[5] = [B,T,H,m,n] with the broadcast dimensions 1. */
void ranges_input_shape(char bcast, int64_t B, int64_t T, int64_t H, int64_t m, int64_t n,
                        int64_t shape[5]);

#endif
