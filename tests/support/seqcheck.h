/* seqcheck.h - a whole-sequence gradient check on the float64 reference
 * executor, shared by test_models and test_random_steps: a problem (inputs,
 * initial states, outputs, final states, the loss weights and the gradients,
 * all float64, with the pointer arrays that frnn_reference_forward and
 * frnn_reference_backward take), the loss
 *   L = sum(Wy * outputs) + sum(WS * final states)
 * (so the backward gets grad_outputs = Wy and grad_final_states = WS), and
 * central differences of it.  How inputs and initial states are shaped and
 * filled is the test's part. */
#ifndef FRNN_SEQCHECK_H
#define FRNN_SEQCHECK_H

#include "testutil.h"

#define SC_MAXP 16 /* ports of each kind */

typedef struct sc_problem {
  const frnn_step *step;
  frnn_sizes sz;
  int ni, ns, no; /* port counts */
  ttensor in[SC_MAXP], st[SC_MAXP], out[SC_MAXP], fin[SC_MAXP];
  ttensor wout[SC_MAXP], wfin[SC_MAXP], gin[SC_MAXP], gst[SC_MAXP];
  const DLTensor *in_p[SC_MAXP], *st_p[SC_MAXP], *wout_p[SC_MAXP], *wfin_p[SC_MAXP];
  DLTensor *out_p[SC_MAXP], *fin_p[SC_MAXP], *gin_p[SC_MAXP], *gst_p[SC_MAXP];
  bool forward_failed;   /* set by sc_loss when frnn_reference_forward fails */
  char forward_msg[200]; /* its message */
} sc_problem;

/* The test's part: make port i's tensor x (float64, contiguous) and fill it.
 * shape is the port's full shape ([B,T,H,m,n] for an input, [B,H,m,n] for a
 * state, m and n by its class); an input may take a broadcast of it (some
 * dimensions 1), a state takes it as it is. */
typedef void sc_make_fn(void *user, int i, const int64_t *shape, ttensor *x);

/* Allocates the problem of step at sizes sz.  Random draws come in this
 * order (so that a seed replays a run): make_input for each input; for each
 * state make_state, then its weight WS, uniform(-1, 1) from r; then each
 * output's weight Wy from r.  Outputs, final states and gradients are zero;
 * a gradient has its input's shape. */
void sc_problem_alloc(sc_problem *p, const frnn_step *step, frnn_sizes sz, rng *r,
                      sc_make_fn *make_input, sc_make_fn *make_state, void *user);
void sc_problem_free(sc_problem *p);

/* The float64 data of x. */
static inline double *sc_data(ttensor *x) { return (double *)x->t.data; }

/* L at the problem's inputs and states (sums in long double).  When the
 * forward fails: NAN, with p->forward_failed set and its message in
 * p->forward_msg. */
double sc_loss(frnn_ctx *ctx, sc_problem *p);

/* Central difference (L(x + h) - L(x - h)) / ((x + h) - (x - h)) of the loss
 * in the element *x of an input or state (restored afterwards).  With asym, *asym gets how
 * far apart the two one-sided differences are (about h |L''| where L is
 * smooth), l0 being L at x. */
double sc_central(frnn_ctx *ctx, sc_problem *p, double *x, double h, double l0, double *asym);

#endif
