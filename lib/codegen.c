/* codegen.c - the toolkit kernels are built with, and PTX emission.
 *
 * One codegen = one LLVMContext + module + builder + NVPTX target machine,
 * so separate compilations may run on separate threads.  What the measured
 * notes (shared/notes/llvm-nvptx-cuda.md) demand, and where it is done:
 * - a diagnostic handler (without one LLVM exit()s on some errors; with one
 *   emission "succeeds" with bogus calls): on_diag counts every error;
 * - the verifier never aborts (LLVMReturnStatusAction): cg_finish;
 * - only whitelisted CPUs reach LLVM (target.c), only intrinsics that lower
 *   are emitted ("Cannot select" aborts the process whatever we install);
 * - kernels by calling convention 71, launch bounds as nvvm.annotations;
 * - static shared arrays with undef initialisers;
 * - NVVM float intrinsics end in ".f"; tanh.approx by inline asm;
 * - libdevice (trimmed once per process to the four functions the helpers
 *   call) parsed into the same context, linked, internalised, with the
 *   nvvm-reflect-ftz module flag, before O3 (which must get the TM). */
#include "frnn_internal.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Error.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRIPLE "nvptx64-nvidia-cuda"
#define CC_PTX_KERNEL 71
#define AS_GLOBAL 1
#define AS_SHARED 3
#define LOG2E 1.4426950408889634
#define LN2 0.6931471805599453

/* ---------------------------------------------------------------- errors */
void cg_error(codegen *cg, const char *fmt, ...) {
  if (!cg) return;
  if (cg->n_errors++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cg->first_error, sizeof cg->first_error, fmt, ap);
    va_end(ap);
  }
}

static void on_diag(LLVMDiagnosticInfoRef di, void *p) {
  if (LLVMGetDiagInfoSeverity(di) != LLVMDSError) return; /* warnings, remarks: dropped */
  char *d = LLVMGetDiagInfoDescription(di);
  cg_error(p, "%s", d ? d : "(LLVM error without description)");
  LLVMDisposeMessage(d);
}

/* --------------------------------------------------------------- set up */
static pthread_once_t nvptx_once = PTHREAD_ONCE_INIT;

static void nvptx_init(void) {
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
}

frnn_status cg_begin(frnn_ctx *ctx, const target *t, const char *module_name, codegen *cg) {
  if (!cg) return diag_fail(ctx, FRNN_E_ARG, "cg_begin: null codegen");
  memset(cg, 0, sizeof *cg);
  cg->ctx = ctx;
  if (!t) return diag_fail(ctx, FRNN_E_ARG, "cg_begin: null target");
  /* Re-check: a hand-filled target must not smuggle an unknown CPU into LLVM. */
  frnn_status st = target_parse(ctx, t->arch, &cg->tgt);
  if (st) return st;
  pthread_once(&nvptx_once, nvptx_init);

  LLVMTargetRef T = NULL;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(TRIPLE, &T, &err)) {
    st = diag_fail(ctx, FRNN_E_LLVM, "NVPTX target unavailable: %s", err ? err : "?");
    LLVMDisposeMessage(err);
    return st;
  }
  cg->tm = LLVMCreateTargetMachine(T, TRIPLE, cg->tgt.arch, cg->tgt.features,
                                   LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                   LLVMCodeModelDefault);
  if (!cg->tm) return diag_fail(ctx, FRNN_E_LLVM, "cannot create an NVPTX target machine");
  cg->llc = LLVMContextCreate();
  LLVMContextSetDiagnosticHandler(cg->llc, on_diag, cg);
  cg->mod = LLVMModuleCreateWithNameInContext(module_name ? module_name : "frnn", cg->llc);
  LLVMSetTarget(cg->mod, TRIPLE);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(cg->tm);
  LLVMSetModuleDataLayout(cg->mod, td);
  LLVMDisposeTargetData(td);
  cg->b = LLVMCreateBuilderInContext(cg->llc);

  cg->t_void = LLVMVoidTypeInContext(cg->llc);
  cg->t_i1 = LLVMInt1TypeInContext(cg->llc);
  cg->t_i32 = LLVMInt32TypeInContext(cg->llc);
  cg->t_i64 = LLVMInt64TypeInContext(cg->llc);
  cg->t_f32 = LLVMFloatTypeInContext(cg->llc);
  cg->t_bf16 = LLVMBFloatTypeInContext(cg->llc);
  cg->t_f16 = LLVMHalfTypeInContext(cg->llc);
  cg->t_f64 = LLVMDoubleTypeInContext(cg->llc);
  cg->t_ptr = LLVMPointerTypeInContext(cg->llc, 0);
  cg->t_gptr = LLVMPointerTypeInContext(cg->llc, AS_GLOBAL);
  cg->t_sptr = LLVMPointerTypeInContext(cg->llc, AS_SHARED);
  return FRNN_OK;
}

void cg_dispose(codegen *cg) {
  if (!cg) return;
  if (cg->b) LLVMDisposeBuilder(cg->b);
  if (cg->mod) LLVMDisposeModule(cg->mod);
  if (cg->tm) LLVMDisposeTargetMachine(cg->tm);
  if (cg->llc) LLVMContextDispose(cg->llc);
  memset(cg, 0, sizeof *cg);
}

/* -------------------------------------------------------------- kernels */
static void annotate(codegen *cg, LLVMValueRef fn, const char *key, int v) {
  LLVMMetadataRef ops[3] = {
      LLVMValueAsMetadata(fn),
      LLVMMDStringInContext2(cg->llc, key, strlen(key)),
      LLVMValueAsMetadata(LLVMConstInt(cg->t_i32, (unsigned long long)v, 0)),
  };
  LLVMAddNamedMetadataOperand(cg->mod, "nvvm.annotations",
                              LLVMMetadataAsValue(cg->llc, LLVMMDNodeInContext2(cg->llc, ops, 3)));
}

static LLVMAttributeRef enum_attr(codegen *cg, const char *name, uint64_t v) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  return LLVMCreateEnumAttribute(cg->llc, kind, v);
}

LLVMValueRef cg_kernel(codegen *cg, const char *name, LLVMTypeRef *param_types, int n,
                       int max_threads, int min_blocks) {
  if (n < 0 || (n > 0 && !param_types)) {
    cg_error(cg, "cg_kernel %s: bad parameter list", name);
    n = 0;
  }
  LLVMTypeRef fty = LLVMFunctionType(cg->t_void, param_types, (unsigned)n, 0);
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, fty);
  size_t len = 0;
  if (strcmp(LLVMGetValueName2(fn, &len), name) != 0)
    cg_error(cg, "cg_kernel: two kernels named %s", name);
  LLVMSetFunctionCallConv(fn, CC_PTX_KERNEL);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, enum_attr(cg, "nounwind", 0));
  if (cg->ftz) {
    static const char k[] = "denormal-fp-math-f32", v[] = "preserve-sign,preserve-sign";
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(cg->llc, k, sizeof k - 1, v, sizeof v - 1));
  }
  if (max_threads > 1024) cg_error(cg, "cg_kernel %s: max_threads %d > 1024", name, max_threads);
  if (max_threads > 0) annotate(cg, fn, "maxntidx", max_threads);
  if (min_blocks > 0) annotate(cg, fn, "minctasm", min_blocks);
  cg->fn = fn;
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->llc, fn, "entry"));
  return fn;
}

static int param_ok(codegen *cg, LLVMValueRef fn, int i, const char *what) {
  if (fn && i >= 0 && (unsigned)i < LLVMCountParams(fn)) return 1;
  cg_error(cg, "%s: no parameter %d", what, i);
  return 0;
}

void cg_param_noalias(codegen *cg, LLVMValueRef fn, int i) {
  if (param_ok(cg, fn, i, "cg_param_noalias"))
    LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, enum_attr(cg, "noalias", 0));
}

void cg_param_readonly(codegen *cg, LLVMValueRef fn, int i) {
  if (param_ok(cg, fn, i, "cg_param_readonly"))
    LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, enum_attr(cg, "readonly", 0));
}

LLVMValueRef cg_param(codegen *cg, int i) {
  if (!param_ok(cg, cg->fn, i, "cg_param")) return LLVMGetUndef(cg->t_i64);
  return LLVMGetParam(cg->fn, (unsigned)i);
}

/* ------------------------------------------------------------ intrinsics */
LLVMValueRef cg_intrinsic(codegen *cg, const char *name, LLVMTypeRef *overloads, int n_over,
                          LLVMValueRef *args, int n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  if (!id) {
    cg_error(cg, "unknown intrinsic %s", name);
    return LLVMGetUndef(cg->t_f32);
  }
  if ((LLVMIntrinsicIsOverloaded(id) != 0) != (n_over > 0)) {
    cg_error(cg, "intrinsic %s: %s overload types", name, n_over ? "takes no" : "needs");
    return LLVMGetUndef(cg->t_f32);
  }
  LLVMTypeRef fty = LLVMIntrinsicGetType(cg->llc, id, overloads, (size_t)n_over);
  LLVMTypeRef ret = LLVMGetReturnType(fty);
  int bad = LLVMCountParamTypes(fty) != (unsigned)n_args || LLVMIsFunctionVarArg(fty);
  if (!bad && n_args > 0) {
    LLVMTypeRef pt[16];
    if (n_args > 16) {
      bad = 1;
    } else {
      LLVMGetParamTypes(fty, pt);
      for (int i = 0; i < n_args; i++) bad |= !args[i] || LLVMTypeOf(args[i]) != pt[i];
    }
  }
  if (bad) {
    cg_error(cg, "intrinsic %s: wrong number or types of arguments", name);
    return LLVMGetTypeKind(ret) == LLVMVoidTypeKind ? NULL : LLVMGetUndef(ret);
  }
  LLVMValueRef decl = LLVMGetIntrinsicDeclaration(cg->mod, id, overloads, (size_t)n_over);
  return LLVMBuildCall2(cg->b, fty, decl, args, (unsigned)n_args, "");
}

static LLVMValueRef sreg(codegen *cg, const char *name) {
  return cg_intrinsic(cg, name, NULL, 0, NULL, 0);
}
LLVMValueRef cg_tid_x(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.tid.x"); }
LLVMValueRef cg_ntid_x(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.ntid.x"); }
LLVMValueRef cg_ctaid_x(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.ctaid.x"); }
LLVMValueRef cg_ctaid_y(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.ctaid.y"); }
LLVMValueRef cg_ctaid_z(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.ctaid.z"); }
LLVMValueRef cg_nctaid_x(codegen *cg) { return sreg(cg, "llvm.nvvm.read.ptx.sreg.nctaid.x"); }

void cg_barrier(codegen *cg) { cg_intrinsic(cg, "llvm.nvvm.barrier0", NULL, 0, NULL, 0); }

/* shfl.sync's c operand: segment mask in bits 8-12, clamp in bits 0-4. */
static LLVMValueRef shfl(codegen *cg, const char *kind, LLVMValueRef v, LLVMValueRef lane,
                         int width, int clamp) {
  if (width < 1 || width > 32 || (width & (width - 1))) {
    cg_error(cg, "shuffle width %d is not a power of two <= 32", width);
    width = 32;
  }
  char name[64];
  snprintf(name, sizeof name, "llvm.nvvm.shfl.sync.%s.f32", kind);
  LLVMValueRef args[4] = {cg_i32(cg, -1), v, lane, cg_i32(cg, ((32 - width) << 8) | clamp)};
  return cg_intrinsic(cg, name, NULL, 0, args, 4);
}

LLVMValueRef cg_shfl_bfly_f32(codegen *cg, LLVMValueRef v, int lane_mask, int width) {
  if (lane_mask < 0 || lane_mask > 31) cg_error(cg, "shuffle lane mask %d", lane_mask);
  return shfl(cg, "bfly", v, cg_i32(cg, lane_mask & 31), width, 0x1f);
}

LLVMValueRef cg_sum_lanes_f32(codegen *cg, LLVMValueRef v, int lanes) {
  for (int m = lanes / 2; m >= 1; m /= 2) v = cg_fadd(cg, v, cg_shfl_bfly_f32(cg, v, m, 32));
  return v;
}

LLVMValueRef cg_shfl_down_f32(codegen *cg, LLVMValueRef v, int delta, int width) {
  if (delta < 0 || delta > 31) cg_error(cg, "shuffle delta %d", delta);
  return shfl(cg, "down", v, cg_i32(cg, delta & 31), width, 0x1f);
}

LLVMValueRef cg_shfl_idx_f32(codegen *cg, LLVMValueRef v, LLVMValueRef src_lane, int width) {
  return shfl(cg, "idx", v, src_lane, width, 0x1f);
}

/* --------------------------------------------------------------- shared */
LLVMValueRef cg_shared_array(codegen *cg, const char *name, LLVMTypeRef elem, int64_t count) {
  if (count <= 0) {
    cg_error(cg, "shared array %s: %lld elements", name, (long long)count);
    count = 1;
  }
  LLVMTypeRef at = LLVMArrayType2(elem, (uint64_t)count);
  LLVMValueRef g = LLVMAddGlobalInAddressSpace(cg->mod, at, name, AS_SHARED);
  LLVMSetLinkage(g, LLVMInternalLinkage);
  LLVMSetInitializer(g, LLVMGetUndef(at)); /* a zeroinitializer would be dropped */
  LLVMSetAlignment(g, 16);
  return g;
}

/* ------------------------------------------------------------- clusters */
/* Inline PTX rather than the llvm.nvvm cluster intrinsics: an intrinsic
 * that does not lower aborts the process ("Cannot select"). */
static LLVMValueRef inline_ptx(codegen *cg, LLVMTypeRef ret, LLVMTypeRef *args, int n_args,
                               const char *text, const char *constraints, bool side_effects,
                               LLVMValueRef *vals) {
  LLVMTypeRef fty = LLVMFunctionType(ret, args, (unsigned)n_args, 0);
  LLVMValueRef ia = LLVMGetInlineAsm(fty, text, strlen(text), constraints, strlen(constraints),
                                     side_effects, 0, LLVMInlineAsmDialectATT, 0);
  return LLVMBuildCall2(cg->b, fty, ia, vals, (unsigned)n_args, "");
}

/* Inline PTX computing an f32 from n f32 operands, nothing else: memory(none),
 * nounwind, so that LLVM may hoist and share it like an operation. */
static LLVMValueRef pure_ptx_f32(codegen *cg, const char *text, const char *constraints, LLVMValueRef *vals, int n) {
  LLVMTypeRef args[2] = {cg->t_f32, cg->t_f32};
  LLVMValueRef call = inline_ptx(cg, cg->t_f32, args, n, text, constraints, false, vals);
  LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex, enum_attr(cg, "memory", 0));
  LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex, enum_attr(cg, "nounwind", 0));
  return call;
}

void cg_cluster_barrier(codegen *cg) {
  if (cg->tgt.sm < 90) cg_error(cg, "cluster barrier needs sm_90, target is %s", cg->tgt.arch);
  /* arrive has release and wait acquire semantics: shared-memory writes
   * before it are visible to every block of the cluster after it. */
  inline_ptx(cg, cg->t_void, NULL, 0,
             "barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;", "~{memory}", true,
             NULL);
}

LLVMValueRef cg_cluster_shared(codegen *cg, LLVMValueRef shared, LLVMValueRef rank) {
  if (cg->tgt.sm < 90) cg_error(cg, "distributed shared memory needs sm_90, target is %s", cg->tgt.arch);
  LLVMValueRef generic = LLVMBuildAddrSpaceCast(cg->b, shared, cg->t_ptr, "");
  LLVMValueRef addr = LLVMBuildPtrToInt(cg->b, generic, cg->t_i64, "");
  LLVMTypeRef at[2] = {cg->t_i64, cg->t_i32};
  LLVMValueRef av[2] = {addr, rank};
  LLVMValueRef remote = inline_ptx(cg, cg->t_i64, at, 2, "mapa.u64 $0, $1, $2;", "=l,l,r", false, av);
  return LLVMBuildIntToPtr(cg->b, remote, cg->t_ptr, "");
}

LLVMValueRef cg_dynamic_shared(codegen *cg, const char *name) {
  LLVMValueRef g = LLVMGetNamedGlobal(cg->mod, name);
  if (g) return g;
  g = LLVMAddGlobalInAddressSpace(cg->mod, LLVMArrayType2(cg->t_f32, 0), name, AS_SHARED);
  LLVMSetAlignment(g, 16); /* external, no initialiser: .extern .shared */
  return g;
}

/* ----------------------------------------------------------------- math */
static LLVMValueRef contract(LLVMValueRef v) {
  if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowContract);
  return v;
}
LLVMValueRef cg_fadd(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return contract(LLVMBuildFAdd(cg->b, a, b, ""));
}
LLVMValueRef cg_fsub(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return contract(LLVMBuildFSub(cg->b, a, b, ""));
}
LLVMValueRef cg_fmul(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return contract(LLVMBuildFMul(cg->b, a, b, ""));
}
/* a / b: IEEE (div.rn.f32: a reciprocal, its refinement, a range check and a
 * branch to a slow path), or where cg->div_full (the recurrent kernels, not
 * accurate math) div.full.f32, at most 2 ulp off, no branch; a constant
 * divisor stays LLVM's to fold. */
LLVMValueRef cg_fdiv(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  if (!cg->div_full || cg->accurate || LLVMIsConstant(b)) return LLVMBuildFDiv(cg->b, a, b, "");
  LLVMValueRef vals[2] = {a, b};
  return pure_ptx_f32(cg, cg->ftz ? "div.full.ftz.f32 $0, $1, $2;" : "div.full.f32 $0, $1, $2;", "=f,f,f", vals, 2);
}
LLVMValueRef cg_fneg(codegen *cg, LLVMValueRef a) { return LLVMBuildFNeg(cg->b, a, ""); }

static LLVMValueRef f32_intr(codegen *cg, const char *name, LLVMValueRef x) {
  return cg_intrinsic(cg, name, NULL, 0, &x, 1);
}
static LLVMValueRef f32_overloaded(codegen *cg, const char *name, LLVMValueRef *args, int n) {
  return cg_intrinsic(cg, name, &cg->t_f32, 1, args, n);
}

/* A libdevice function float(float...): declared here, linked by cg_finish. */
static LLVMValueRef libdevice(codegen *cg, const char *name, LLVMValueRef *args, int n) {
  LLVMTypeRef pt[2] = {cg->t_f32, cg->t_f32};
  LLVMTypeRef fty = LLVMFunctionType(cg->t_f32, pt, (unsigned)n, 0);
  LLVMValueRef f = LLVMGetNamedFunction(cg->mod, name);
  if (!f) f = LLVMAddFunction(cg->mod, name, fty);
  cg->need_libdevice = true;
  return LLVMBuildCall2(cg->b, fty, f, args, (unsigned)n, "");
}

LLVMValueRef cg_exp(codegen *cg, LLVMValueRef x) {
  if (cg->accurate) return libdevice(cg, "__nv_expf", &x, 1);
  return f32_intr(cg, "llvm.nvvm.ex2.approx.ftz.f", cg_fmul(cg, x, cg_f32(cg, LOG2E)));
}

LLVMValueRef cg_log(codegen *cg, LLVMValueRef x) {
  if (cg->accurate) return libdevice(cg, "__nv_logf", &x, 1);
  const char *lg2 = cg->ftz ? "llvm.nvvm.lg2.approx.ftz.f" : "llvm.nvvm.lg2.approx.f";
  return cg_fmul(cg, f32_intr(cg, lg2, x), cg_f32(cg, LN2));
}

LLVMValueRef cg_sqrt(codegen *cg, LLVMValueRef x) { return f32_overloaded(cg, "llvm.sqrt", &x, 1); }

LLVMValueRef cg_rsqrt(codegen *cg, LLVMValueRef x) {
  return f32_intr(cg, cg->ftz ? "llvm.nvvm.rsqrt.approx.ftz.f" : "llvm.nvvm.rsqrt.approx.f", x);
}

LLVMValueRef cg_tanh(codegen *cg, LLVMValueRef x) {
  if (cg->accurate) return libdevice(cg, "__nv_tanhf", &x, 1);
  /* No tanh intrinsic in LLVM 19 and __nv_fast_tanhf emits a bad call. */
  return pure_ptx_f32(cg, "tanh.approx.f32 $0, $1;", "=f,f", &x, 1);
}

LLVMValueRef cg_fabs(codegen *cg, LLVMValueRef x) { return f32_overloaded(cg, "llvm.fabs", &x, 1); }

LLVMValueRef cg_fma(codegen *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return f32_overloaded(cg, "llvm.fma", args, 3);
}

/* x as the sum of two TF32 values, hi + lo (bit patterns, i32): the
 * operands of a 3xTF32 product, whose three partial products (lo*hi,
 * hi*lo, hi*hi) keep close to float32's precision (lo*lo, under 2^-21 of
 * the product, is dropped).  hi is x rounded to TF32 in integer
 * arithmetic (half away from zero; cvt.rna.tf32.f32 costs about four
 * instructions on sm_90, this two); lo = x - hi is exact in float32 and
 * goes in as it is: the tensor cores read a TF32 operand's top 19 bits. */
void cg_split_tf32(codegen *cg, LLVMValueRef x, LLVMValueRef *hi, LLVMValueRef *lo) {
  LLVMValueRef bits = LLVMBuildBitCast(cg->b, x, cg->t_i32, "");
  bits = LLVMBuildAdd(cg->b, bits, LLVMConstInt(cg->t_i32, 0x1000, 0), "");
  *hi = LLVMBuildAnd(cg->b, bits, LLVMConstInt(cg->t_i32, 0xffffe000u, 0), "");
  LLVMValueRef rest = cg_fsub(cg, x, LLVMBuildBitCast(cg->b, *hi, cg->t_f32, ""));
  *lo = LLVMBuildBitCast(cg->b, rest, cg->t_i32, "");
}

/* c += a b on a warp's tensor cores: mma.sync m16n8k8, A row-major TF32
 * (4 i32 a lane), B column-major (2 i32), C float32 (4 a lane); every lane
 * of the warp must take part. */
void cg_mma_tf32(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]) {
  LLVMValueRef args[10] = {a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], c[2], c[3]};
  LLVMValueRef d = cg_intrinsic(cg, "llvm.nvvm.mma.m16n8k8.row.col.tf32", NULL, 0, args, 10);
  for (unsigned i = 0; i < 4; i++) c[i] = LLVMBuildExtractValue(cg->b, d, i, "");
}

/* c += a b by one mma.sync in inline PTX (`shape`: its text up to the
 * operands): 4 A registers, 2 B, 4 C of types ab and acc, whose
 * constraint letters are ab_c and acc_c. */
static void mma_inline(codegen *cg, const char *shape, LLVMTypeRef ab, char ab_c, LLVMTypeRef acc, char acc_c,
                       LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]) {
  LLVMTypeRef args[10], ret4[4] = {acc, acc, acc, acc};
  for (int i = 0; i < 10; i++) args[i] = i < 6 ? ab : acc;
  LLVMTypeRef ret = LLVMStructTypeInContext(cg->llc, ret4, 4, 0);
  LLVMValueRef vals[10] = {a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], c[2], c[3]};
  char text[160], cons[64];
  snprintf(text, sizeof text, "%s {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9}, {$10,$11,$12,$13};", shape);
  snprintf(cons, sizeof cons, "=%c,=%c,=%c,=%c,%c,%c,%c,%c,%c,%c,0,1,2,3", acc_c, acc_c, acc_c, acc_c, ab_c, ab_c, ab_c,
           ab_c, ab_c, ab_c);
  LLVMValueRef d = inline_ptx(cg, ret, args, 10, text, cons, false, vals);
  for (unsigned i = 0; i < 4; i++) c[i] = LLVMBuildExtractValue(cg->b, d, i, "");
}

/* c += a b in float64 on a warp's tensor cores (sm_90: mma.sync m16n8k8
 * .f64, the same fragment layout as the TF32 m16n8k8: A row-major, 4
 * doubles a lane; B column-major, 2; C, 4).  float32 operands are exact in
 * float64, so one product keeps every bit that the three of a 3xTF32
 * product approximate, and the sum is a float64 one.  Inline PTX: LLVM 19
 * has no intrinsic for the sm_90 float64 shapes. */
void cg_mma_f64(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]) {
  if (cg->tgt.sm < 90) {
    cg_error(cg, "mma m16n8k8 .f64 needs sm_90, target is %s", cg->tgt.arch);
    return;
  }
  mma_inline(cg, "mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64", cg->t_f64, 'd', cg->t_f64, 'd', a, b, c);
}

/* Two float32 values as the sum of three bfloat16 pairs, hi + mid + lo
 * (each an i32 holding x0's part in its low half, x1's in its high half:
 * the bf16x2 operand of an mma m16n8k16).  Each part is the top 8
 * significant bits of what the parts before it left (truncation: the bits
 * masked off, no rounding), so x = hi + mid + lo exactly for every x whose
 * last part is no bfloat16 subnormal (|x| above about 2^-110): float32's
 * 24 bits in three times 8 (an infinity's remainder is NaN).  Integer
 * masks and float32 subtractions only (the ALU and FMA pipes), no
 * conversion instruction.  exact: the values are bfloat16 already (mid and
 * lo are zero: only hi is formed). */
void cg_split_bf16x3(codegen *cg, LLVMValueRef x0, LLVMValueRef x1, bool exact, LLVMValueRef part[3]) {
  LLVMValueRef mask = LLVMConstInt(cg->t_i32, 0xffff0000u, 0), sixteen = LLVMConstInt(cg->t_i32, 16, 0);
  LLVMValueRef v[2] = {x0, x1};
  for (int p = 0; p < 3; p++) {
    LLVMValueRef bits[2], top[2];
    for (int i = 0; i < 2; i++) {
      bits[i] = LLVMBuildBitCast(cg->b, v[i], cg->t_i32, "");
      top[i] = LLVMBuildAnd(cg->b, bits[i], mask, "");
    }
    part[p] = LLVMBuildOr(cg->b, LLVMBuildLShr(cg->b, bits[0], sixteen, ""), top[1], "");
    if (exact) {
      part[1] = part[2] = NULL;
      return;
    }
    if (p < 2)
      for (int i = 0; i < 2; i++) v[i] = cg_fsub(cg, v[i], LLVMBuildBitCast(cg->b, top[i], cg->t_f32, ""));
  }
}

/* c += a b on a warp's tensor cores: mma.sync m16n8k16, A row-major
 * bfloat16 (4 bf16x2 registers a lane), B column-major (2), C float32 (4);
 * the products exact, their sum float32 (the tensor cores' additions). */
void cg_mma_bf16(codegen *cg, LLVMValueRef const a[4], LLVMValueRef const b[2], LLVMValueRef c[4]) {
  mma_inline(cg, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", cg->t_i32, 'r', cg->t_f32, 'f', a, b, c);
}

/* Loop metadata on the back edge `br` (the branch to the loop's header):
 * unroll `count` times, or not at all (count 1): a self-referential !llvm.loop. */
void cg_unroll(codegen *cg, LLVMValueRef br, int count) {
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(cg->llc, NULL, 0);
  LLVMMetadataRef opts;
  if (count <= 1) {
    const char *key = "llvm.loop.unroll.disable";
    opts = LLVMMDNodeInContext2(cg->llc, (LLVMMetadataRef[]){LLVMMDStringInContext2(cg->llc, key, strlen(key))}, 1);
  } else {
    const char *key = "llvm.loop.unroll.count";
    LLVMMetadataRef n = LLVMValueAsMetadata(LLVMConstInt(cg->t_i32, (unsigned)count, 0));
    opts = LLVMMDNodeInContext2(cg->llc, (LLVMMetadataRef[]){LLVMMDStringInContext2(cg->llc, key, strlen(key)), n}, 2);
  }
  LLVMMetadataRef loop = LLVMMDNodeInContext2(cg->llc, (LLVMMetadataRef[]){tmp, opts}, 2);
  LLVMMetadataReplaceAllUsesWith(tmp, loop);
  unsigned kind = LLVMGetMDKindIDInContext(cg->llc, "llvm.loop", 9);
  LLVMSetMetadata(br, kind, LLVMMetadataAsValue(cg->llc, loop));
}

LLVMValueRef cg_pow(codegen *cg, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef args[2] = {x, y};
  return libdevice(cg, "__nv_powf", args, 2);
}

/* ops.c: a != a || b != b ? a + b : (a > b ? a : b) -- exactly that. */
static LLVMValueRef minmax(codegen *cg, LLVMValueRef a, LLVMValueRef b, LLVMRealPredicate p) {
  LLVMValueRef nan = LLVMBuildFCmp(cg->b, LLVMRealUNO, a, b, "");
  LLVMValueRef pick = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, p, a, b, ""), a, b, "");
  return LLVMBuildSelect(cg->b, nan, LLVMBuildFAdd(cg->b, a, b, ""), pick, "");
}
LLVMValueRef cg_fmax(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return minmax(cg, a, b, LLVMRealOGT);
}
LLVMValueRef cg_fmin(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return minmax(cg, a, b, LLVMRealOLT);
}

/* ------------------------------------------------------ constants, glue */
LLVMValueRef cg_f32(codegen *cg, double v) { return LLVMConstReal(cg->t_f32, v); }
LLVMValueRef cg_i32(codegen *cg, int64_t v) {
  return LLVMConstInt(cg->t_i32, (unsigned long long)v, 1);
}
LLVMValueRef cg_i64(codegen *cg, int64_t v) {
  return LLVMConstInt(cg->t_i64, (unsigned long long)v, 1);
}
LLVMValueRef cg_add(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(cg->b, a, b, "");
}
LLVMValueRef cg_mul(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildMul(cg->b, a, b, "");
}
LLVMValueRef cg_ult(codegen *cg, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(cg->b, LLVMIntULT, a, b, "");
}
LLVMValueRef cg_select(codegen *cg, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(cg->b, c, a, b, "");
}
LLVMValueRef cg_zext64(codegen *cg, LLVMValueRef v) {
  return LLVMBuildZExt(cg->b, v, cg->t_i64, "");
}

LLVMBasicBlockRef cg_block(codegen *cg, const char *name) {
  if (!cg->fn) {
    cg_error(cg, "cg_block %s: no kernel", name);
    return NULL;
  }
  return LLVMAppendBasicBlockInContext(cg->llc, cg->fn, name);
}
void cg_at(codegen *cg, LLVMBasicBlockRef bb) {
  if (bb) LLVMPositionBuilderAtEnd(cg->b, bb);
  else cg_error(cg, "cg_at: null block");
}
void cg_br(codegen *cg, LLVMBasicBlockRef bb) {
  if (bb) LLVMBuildBr(cg->b, bb);
  else cg_error(cg, "cg_br: null block");
}
void cg_cond_br(codegen *cg, LLVMValueRef c, LLVMBasicBlockRef t, LLVMBasicBlockRef f) {
  if (t && f) LLVMBuildCondBr(cg->b, c, t, f);
  else cg_error(cg, "cg_cond_br: null block");
}
void cg_ret(codegen *cg) { LLVMBuildRetVoid(cg->b); }

void cg_guard(codegen *cg, LLVMValueRef flag, int guard) {
  if (guard == GUARD_NONE) return;
  LLVMBasicBlockRef check = cg_block(cg, "guard_check"), run = cg_block(cg, "guarded"),
                    skip = cg_block(cg, "guard_skip");
  cg_cond_br(cg, LLVMBuildIsNull(cg->b, flag, ""), run, check);
  cg_at(cg, check);
  LLVMValueRef set = LLVMBuildICmp(cg->b, LLVMIntNE, cg_load(cg, cg->t_i32, flag), cg_i32(cg, 0), "");
  bool fallback = guard == GUARD_FALLBACK;
  cg_cond_br(cg, set, fallback ? run : skip, fallback ? skip : run);
  cg_at(cg, skip);
  cg_ret(cg);
  cg_at(cg, run);
}

/* --------------------------------------------------------------- memory */
LLVMValueRef cg_gep(codegen *cg, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(cg->b, elem, base, &idx, 1, "");
}
LLVMValueRef cg_load(codegen *cg, LLVMTypeRef ty, LLVMValueRef ptr) {
  return LLVMBuildLoad2(cg->b, ty, ptr, "");
}
void cg_store(codegen *cg, LLVMValueRef v, LLVMValueRef ptr) { LLVMBuildStore(cg->b, v, ptr); }

static LLVMTypeRef dtype_type(codegen *cg, enum tdtype dt, unsigned *size) {
  switch (dt) {
  case TD_F32: *size = 4; return cg->t_f32;
  case TD_BF16: *size = 2; return cg->t_bf16;
  case TD_F16: *size = 2; return cg->t_f16;
  case TD_F64: *size = 8; return cg->t_f64;
  }
  cg_error(cg, "unknown tensor dtype %d", (int)dt);
  *size = 4;
  return cg->t_f32;
}

LLVMValueRef cg_elem_addr(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt) {
  unsigned size;
  return LLVMBuildPtrToInt(cg->b, cg_gep(cg, dtype_type(cg, dt, &size), base, idx64), cg->t_i64, "");
}

LLVMValueRef cg_opaque_i64(codegen *cg, LLVMValueRef v) {
  return inline_ptx(cg, cg->t_i64, &cg->t_i64, 1, "mov.b64 $0, $1;", "=l,l", false, &v);
}

LLVMValueRef cg_load_raw_opaque(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt) {
  return cg_load_raw_at(cg, cg_elem_addr(cg, base, idx64, dt), dt);
}

LLVMValueRef cg_load_raw_at(codegen *cg, LLVMValueRef addr, enum tdtype dt) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  if (size == 2) {
    LLVMTypeRef i16 = LLVMInt16TypeInContext(cg->llc);
    LLVMValueRef bits = inline_ptx(cg, i16, &cg->t_i64, 1, "ld.global.nc.u16 $0, [$1];", "=h,l", true, &addr);
    return LLVMBuildBitCast(cg->b, bits, ty, "");
  }
  return inline_ptx(cg, ty, &cg->t_i64, 1, size == 8 ? "ld.global.nc.f64 $0, [$1];" : "ld.global.nc.f32 $0, [$1];",
                    size == 8 ? "=d,l" : "=f,l", true, &addr);
}

LLVMTypeRef cg_raw_type(codegen *cg, enum tdtype dt) {
  unsigned size;
  return dtype_type(cg, dt, &size);
}

LLVMValueRef cg_raw_to_f32(codegen *cg, LLVMValueRef v, enum tdtype dt) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  if (ty == cg->t_f32) return v;
  if (ty == cg->t_f64) return LLVMBuildFPTrunc(cg->b, v, cg->t_f32, "");
  return LLVMBuildFPExt(cg->b, v, cg->t_f32, "");
}

LLVMValueRef cg_load_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  LLVMValueRef v = cg_load(cg, ty, cg_gep(cg, ty, base, idx64));
  LLVMSetAlignment(v, size);
  return cg_raw_to_f32(cg, v, dt);
}

void cg_prefetch_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  LLVMValueRef addr = LLVMBuildPtrToInt(cg->b, cg_gep(cg, ty, base, idx64), cg->t_i64, "");
  inline_ptx(cg, cg->t_void, &cg->t_i64, 1, "prefetch.global.L1 [$0];", "l", true, &addr);
}
void cg_prefetch_elem_l2(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  LLVMValueRef addr = LLVMBuildPtrToInt(cg->b, cg_gep(cg, ty, base, idx64), cg->t_i64, "");
  inline_ptx(cg, cg->t_void, &cg->t_i64, 1, "prefetch.global.L2 [$0];", "l", true, &addr);
}

/* Copy 4 bytes from global src to shared dst without waiting (cp.async),
 * or write 0 where `ok` is false (src-size 0: src is not read). */
void cg_copy_async4(codegen *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef ok) {
  LLVMValueRef args[3] = {dst, src, LLVMBuildSelect(cg->b, ok, LLVMConstInt(cg->t_i32, 4, 0), LLVMConstInt(cg->t_i32, 0, 0), "")};
  cg_intrinsic(cg, "llvm.nvvm.cp.async.ca.shared.global.4.s", NULL, 0, args, 3);
}
/* The same for 16 bytes (dst and src 16-byte aligned), bypassing L1 (.cg). */
void cg_copy_async16(codegen *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef ok) {
  LLVMValueRef args[3] = {dst, src, LLVMBuildSelect(cg->b, ok, LLVMConstInt(cg->t_i32, 16, 0), LLVMConstInt(cg->t_i32, 0, 0), "")};
  cg_intrinsic(cg, "llvm.nvvm.cp.async.cg.shared.global.16.s", NULL, 0, args, 3);
}
/* Wait for every cp.async of this thread (a barrier then shows them to the block). */
void cg_copy_async_wait(codegen *cg) { cg_intrinsic(cg, "llvm.nvvm.cp.async.wait.all", NULL, 0, NULL, 0); }
/* Close this thread's cp.async issued since the last commit into a group. */
void cg_copy_async_commit(codegen *cg) { cg_intrinsic(cg, "llvm.nvvm.cp.async.commit.group", NULL, 0, NULL, 0); }
/* Wait until at most `pending` of this thread's latest groups are in flight
 * (groups complete in the order they were committed). */
void cg_copy_async_wait_group(codegen *cg, int pending) {
  LLVMValueRef n = LLVMConstInt(cg->t_i32, (unsigned)pending, 0);
  cg_intrinsic(cg, "llvm.nvvm.cp.async.wait.group", NULL, 0, &n, 1);
}

/* f32 as type ty (one of dtype_type's): widened, or rounded (RNE). */
static LLVMValueRef f32_as(codegen *cg, LLVMValueRef f32, LLVMTypeRef ty) {
  if (ty == cg->t_f64) return LLVMBuildFPExt(cg->b, f32, ty, "");
  return ty == cg->t_f32 ? f32 : LLVMBuildFPTrunc(cg->b, f32, ty, "");
}

void cg_store_elem(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt,
                   LLVMValueRef f32) {
  if (LLVMTypeOf(f32) != cg->t_f32) {
    cg_error(cg, "cg_store_elem: value is not f32");
    return;
  }
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  LLVMValueRef v = f32_as(cg, f32, ty);
  LLVMSetAlignment(LLVMBuildStore(cg->b, v, cg_gep(cg, ty, base, idx64)), size);
}

/* cg_store_elem where `pred` (i1) holds, as one predicated PTX store: no
 * branch around it, which would let LLVM sink the stored value's
 * computation into the branch, out of the block ptxas schedules the rest of
 * the step in (a backward walk's gradients: lower_llvm.c store_tensor).
 * The address is formed even where pred is false (a null tensor's): not
 * inbounds, never dereferenced. */
void cg_store_elem_if(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, LLVMValueRef f32,
                      LLVMValueRef pred) {
  unsigned size;
  LLVMTypeRef ty = dtype_type(cg, dt, &size);
  LLVMValueRef v = f32_as(cg, f32, ty);
  const char *text = "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.f32 [$0], $1; }", *cons = "l,f,r";
  if (size == 2) {
    v = LLVMBuildBitCast(cg->b, v, LLVMInt16TypeInContext(cg->llc), "");
    text = "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.b16 [$0], $1; }", cons = "l,h,r";
  } else if (size == 8) {
    text = "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.global.f64 [$0], $1; }", cons = "l,d,r";
  }
  LLVMValueRef at = LLVMBuildGEP2(cg->b, ty, base, &idx64, 1, "");
  LLVMValueRef args[3] = {LLVMBuildPtrToInt(cg->b, at, cg->t_i64, ""), v, LLVMBuildZExt(cg->b, pred, cg->t_i32, "")};
  LLVMTypeRef types[3] = {cg->t_i64, LLVMTypeOf(v), cg->t_i32};
  inline_ptx(cg, cg->t_void, types, 3, text, cons, true, args);
}

/* ------------------------------------------------------------- vectors */
static int elems_per_word(enum tdtype dt, int n) { return n >= 2 && tdtype_bytes(dt) == 2 ? 2 : 1; }

int cg_vec_words(enum tdtype dt, int n) { return n / elems_per_word(dt, n); }

LLVMTypeRef cg_word_type(codegen *cg, enum tdtype dt, int n) {
  return elems_per_word(dt, n) == 2 ? cg->t_i32 : cg_raw_type(cg, dt);
}

/* The PTX type and inline-asm constraint of a word. */
static void word_ptx(enum tdtype dt, int n, const char **type, const char **cons) {
  int size = tdtype_bytes(dt);
  *type = elems_per_word(dt, n) == 2 ? "b32" : size == 8 ? "f64" : "f32";
  *cons = elems_per_word(dt, n) == 2 ? "r" : size == 8 ? "d" : "f";
}

/* "{$first, $first+1, ...}" of w words (one: "$first"), into buf. */
static void operand_list(char *buf, size_t size, int first, int w) {
  int k = snprintf(buf, size, "%s", w > 1 ? "{" : "");
  for (int i = 0; i < w; i++) k += snprintf(buf + k, size - (size_t)k, "%s$%d", i ? ", " : "", first + i);
  snprintf(buf + k, size - (size_t)k, "%s", w > 1 ? "}" : "");
}

void cg_load_words_at(codegen *cg, LLVMValueRef addr, enum tdtype dt, int n, LLVMValueRef *words) {
  int w = cg_vec_words(dt, n);
  if (w != 1 && w != 2 && w != 4) {
    cg_error(cg, "cg_load_words_at: %d elements of %d bytes are not a vector", n, tdtype_bytes(dt));
    return;
  }
  const char *type, *cons;
  word_ptx(dt, n, &type, &cons);
  char outs[64], text[160], constraints[64];
  operand_list(outs, sizeof outs, 0, w);
  snprintf(text, sizeof text, "ld.global.nc%s.%s %s, [$%d];", w > 1 ? (w == 2 ? ".v2" : ".v4") : "", type, outs, w);
  int k = 0;
  for (int i = 0; i < w; i++) k += snprintf(constraints + k, sizeof constraints - (size_t)k, "=%s,", cons);
  snprintf(constraints + k, sizeof constraints - (size_t)k, "l");
  LLVMTypeRef word = cg_word_type(cg, dt, n), fields[4] = {word, word, word, word};
  LLVMTypeRef ret = w == 1 ? word : LLVMStructTypeInContext(cg->llc, fields, (unsigned)w, 0);
  LLVMValueRef v = inline_ptx(cg, ret, &cg->t_i64, 1, text, constraints, true, &addr);
  for (int i = 0; i < w; i++) words[i] = w == 1 ? v : LLVMBuildExtractValue(cg->b, v, (unsigned)i, "");
}

LLVMValueRef cg_word_to_f32(codegen *cg, LLVMValueRef w, enum tdtype dt, int n, int k) {
  if (elems_per_word(dt, n) == 1) return cg_raw_to_f32(cg, w, dt);
  if (dt == TD_BF16) /* a bf16 is a float32's upper half: one shift or mask */
    return LLVMBuildBitCast(cg->b,
                            k % 2 ? LLVMBuildAnd(cg->b, w, LLVMConstInt(cg->t_i32, 0xffff0000u, 0), "")
                                  : LLVMBuildShl(cg->b, w, LLVMConstInt(cg->t_i32, 16, 0), ""),
                            cg->t_f32, "");
  LLVMValueRef half = k % 2 ? LLVMBuildLShr(cg->b, w, LLVMConstInt(cg->t_i32, 16, 0), "") : w;
  LLVMValueRef bits = LLVMBuildTrunc(cg->b, half, LLVMInt16TypeInContext(cg->llc), "");
  return cg_raw_to_f32(cg, LLVMBuildBitCast(cg->b, bits, cg_raw_type(cg, dt), ""), dt);
}

void cg_load_vec_elems(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, int n, LLVMValueRef *f32) {
  LLVMTypeRef ty = cg_raw_type(cg, dt), vty = LLVMVectorType(ty, (unsigned)n);
  LLVMValueRef v = cg_load(cg, vty, cg_gep(cg, ty, base, idx64));
  LLVMSetAlignment(v, (unsigned)(n * tdtype_bytes(dt)));
  for (int k = 0; k < n; k++)
    f32[k] = cg_raw_to_f32(cg, LLVMBuildExtractElement(cg->b, v, cg_i32(cg, k), ""), dt);
}

void cg_store_vec_if(codegen *cg, LLVMValueRef base, LLVMValueRef idx64, enum tdtype dt, int n,
                     const LLVMValueRef *f32, LLVMValueRef pred) {
  int w = cg_vec_words(dt, n), per = n / w;
  if (w != 1 && w != 2 && w != 4) {
    cg_error(cg, "cg_store_vec_if: %d elements of %d bytes are not a vector", n, tdtype_bytes(dt));
    return;
  }
  LLVMTypeRef ty = cg_raw_type(cg, dt);
  LLVMValueRef args[6], words[4];
  LLVMTypeRef types[6];
  LLVMTypeRef f2[2] = {cg->t_f32, cg->t_f32};
  for (int i = 0; i < w; i++) {
    if (per == 1) {
      words[i] = f32_as(cg, f32[i], ty);
      continue;
    }
    /* two 2-byte elements: one cvt rounds (as f32_as) and packs both, its
     * first operand into the upper half */
    LLVMValueRef hi_lo[2] = {f32[2 * i + 1], f32[2 * i]};
    words[i] = inline_ptx(cg, cg->t_i32, f2, 2, dt == TD_BF16 ? "cvt.rn.bf16x2.f32 $0, $1, $2;" : "cvt.rn.f16x2.f32 $0, $1, $2;",
                          "=r,f,f", false, hi_lo);
  }
  const char *type, *cons;
  word_ptx(dt, n, &type, &cons);
  char ins[64], text[200], constraints[64];
  operand_list(ins, sizeof ins, 1, w);
  const char *v = w > 1 ? (w == 2 ? ".v2" : ".v4") : "";
  if (pred)
    snprintf(text, sizeof text, "{ .reg .pred p; setp.ne.b32 p, $%d, 0; @p st.global%s.%s [$0], %s; }", w + 1, v,
             type, ins);
  else
    snprintf(text, sizeof text, "st.global%s.%s [$0], %s;", v, type, ins);
  int k = snprintf(constraints, sizeof constraints, "l");
  for (int i = 0; i < w; i++) k += snprintf(constraints + k, sizeof constraints - (size_t)k, ",%s", cons);
  if (pred) snprintf(constraints + k, sizeof constraints - (size_t)k, ",r");
  int na = 0;
  LLVMValueRef at = LLVMBuildGEP2(cg->b, ty, base, &idx64, 1, "");
  types[na] = cg->t_i64, args[na++] = LLVMBuildPtrToInt(cg->b, at, cg->t_i64, "");
  for (int i = 0; i < w; i++) types[na] = LLVMTypeOf(words[i]), args[na++] = words[i];
  if (pred) types[na] = cg->t_i32, args[na++] = LLVMBuildZExt(cg->b, pred, cg->t_i32, "");
  inline_ptx(cg, cg->t_void, types, na, text, constraints, true, args);
}

/* --------------------------------------------------------------- finish */
/* Copy an LLVM string into a malloc'd one the caller frees with free(). */
static frnn_status take_text(codegen *cg, const char *s, size_t n, char **out) {
  char *t = malloc(n + 1);
  if (!t) return diag_fail(cg->ctx, FRNN_E_NOMEM, "out of memory copying %zu bytes of output", n);
  memcpy(t, s, n);
  t[n] = 0;
  *out = t;
  return FRNN_OK;
}

static frnn_status print_module(codegen *cg, char **out) {
  char *s = LLVMPrintModuleToString(cg->mod);
  frnn_status st = take_text(cg, s, strlen(s), out);
  LLVMDisposeMessage(s);
  return st;
}

/* The verifier's message and the IR of the first broken function. */
static frnn_status report_invalid(codegen *cg, const char *msg) {
  LLVMValueRef bad = NULL;
  for (LLVMValueRef f = LLVMGetFirstFunction(cg->mod); f && !bad; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f) && LLVMVerifyFunction(f, LLVMReturnStatusAction)) bad = f;
  char *ir = bad ? LLVMPrintValueToString(bad) : NULL;
  frnn_status st = diag_fail(cg->ctx, FRNN_E_LLVM, "LLVM verifier rejected the module: %s\n%s",
                             msg && *msg ? msg : "(no message)", ir ? ir : "");
  LLVMDisposeMessage(ir);
  return st;
}

static frnn_status fail_llvm(codegen *cg, const char *stage) {
  return diag_fail(cg->ctx, FRNN_E_LLVM, "%s: %s", stage, cg->first_error);
}

/* libdevice holds 352 functions; the helpers call four.  Parsing all of it
 * and running O3 over it cost ~55 ms per compilation, so the first
 * compilation (per libdevice path) parses it once in a scratch context,
 * keeps only these four and what they reach, and caches that bitcode
 * (a few KB) for every later compilation in the process. */
static const char *const libdevice_used[] = {"__nv_expf", "__nv_logf", "__nv_tanhf",
                                             "__nv_powf"};

static struct {
  pthread_mutex_t mu;
  char path[1024]; /* of the cached copy ("" none) */
  char *bc;        /* trimmed bitcode */
  size_t n;
} libdevice_cache = {PTHREAD_MUTEX_INITIALIZER, "", NULL, 0};

typedef struct scratch_diag {
  int n_errors;
  char first[512];
} scratch_diag;

static void on_scratch_diag(LLVMDiagnosticInfoRef di, void *p) {
  scratch_diag *d = p;
  if (LLVMGetDiagInfoSeverity(di) != LLVMDSError || d->n_errors++) return;
  char *m = LLVMGetDiagInfoDescription(di);
  snprintf(d->first, sizeof d->first, "%s", m ? m : "?");
  LLVMDisposeMessage(m);
}

/* Parse libdevice at `path` and return the trimmed bitcode (malloc'd). */
static frnn_status trim_libdevice(frnn_ctx *ctx, const char *path, char **bc, size_t *n) {
  LLVMMemoryBufferRef buf = NULL;
  char *err = NULL;
  if (LLVMCreateMemoryBufferWithContentsOfFile(path, &buf, &err)) {
    frnn_status st = diag_fail(ctx, FRNN_E_IO,
                               "cannot read libdevice '%s': %s (exp/log/tanh in accurate "
                               "mode and pow need it; set FRNN_LIBDEVICE to libdevice.10.bc)",
                               path, err ? err : "?");
    LLVMDisposeMessage(err);
    return st;
  }
  scratch_diag d = {0};
  LLVMContextRef c = LLVMContextCreate();
  LLVMContextSetDiagnosticHandler(c, on_scratch_diag, &d);
  LLVMModuleRef lib = NULL;
  LLVMBool bad = LLVMParseBitcodeInContext2(c, buf, &lib);
  LLVMDisposeMemoryBuffer(buf); /* the parsed module does not keep it */
  frnn_status st = FRNN_OK;
  if (bad || !lib) {
    st = diag_fail(ctx, FRNN_E_LLVM, "libdevice '%s' is not LLVM bitcode: %s", path,
                   d.n_errors ? d.first : "?");
  } else {
    int found = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(lib); f; f = LLVMGetNextFunction(f)) {
      if (LLVMIsDeclaration(f)) continue;
      size_t len;
      const char *name = LLVMGetValueName2(f, &len);
      int keep = 0;
      for (size_t k = 0; k < sizeof libdevice_used / sizeof *libdevice_used; k++)
        keep |= strcmp(name, libdevice_used[k]) == 0;
      found += keep;
      if (!keep) LLVMSetLinkage(f, LLVMInternalLinkage);
    }
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = found == 4 ? LLVMRunPasses(lib, "globaldce", NULL, opts) : NULL;
    LLVMDisposePassBuilderOptions(opts);
    if (e) {
      char *m = LLVMGetErrorMessage(e);
      st = diag_fail(ctx, FRNN_E_LLVM, "trimming libdevice: %s", m);
      LLVMDisposeErrorMessage(m);
    } else if (found != 4 || d.n_errors) {
      st = diag_fail(ctx, FRNN_E_LLVM, "libdevice '%s' lacks __nv_expf/logf/tanhf/powf%s%s", path,
                     d.n_errors ? ": " : "", d.first);
    } else {
      LLVMMemoryBufferRef out = LLVMWriteBitcodeToMemoryBuffer(lib);
      *n = LLVMGetBufferSize(out);
      *bc = malloc(*n ? *n : 1);
      if (*bc) memcpy(*bc, LLVMGetBufferStart(out), *n);
      else st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory caching libdevice");
      LLVMDisposeMemoryBuffer(out);
    }
  }
  if (lib) LLVMDisposeModule(lib);
  LLVMContextDispose(c);
  return st;
}

/* A private copy of the trimmed libdevice of `path`, as an LLVM buffer. */
static frnn_status libdevice_buffer(frnn_ctx *ctx, const char *path, LLVMMemoryBufferRef *out) {
  frnn_status st = FRNN_OK;
  pthread_mutex_lock(&libdevice_cache.mu);
  if (!libdevice_cache.bc || strcmp(libdevice_cache.path, path) != 0) {
    char *bc = NULL;
    size_t n = 0;
    if (strlen(path) >= sizeof libdevice_cache.path)
      st = diag_fail(ctx, FRNN_E_ARG, "libdevice path too long: %.100s...", path);
    else st = trim_libdevice(ctx, path, &bc, &n);
    if (!st) {
      free(libdevice_cache.bc);
      libdevice_cache.bc = bc;
      libdevice_cache.n = n;
      snprintf(libdevice_cache.path, sizeof libdevice_cache.path, "%s", path);
    }
  }
  if (!st)
    *out = LLVMCreateMemoryBufferWithMemoryRangeCopy(libdevice_cache.bc, libdevice_cache.n,
                                                     "libdevice");
  pthread_mutex_unlock(&libdevice_cache.mu);
  return st;
}

static frnn_status link_libdevice(codegen *cg) {
  const char *path = getenv("FRNN_LIBDEVICE");
  if (!path || !*path) path = FRNN_DEFAULT_LIBDEVICE;
  LLVMMemoryBufferRef buf = NULL;
  frnn_status st = libdevice_buffer(cg->ctx, path, &buf);
  if (st) return st;
  LLVMModuleRef lib = NULL;
  LLVMBool bad = LLVMParseBitcodeInContext2(cg->llc, buf, &lib);
  LLVMDisposeMemoryBuffer(buf);
  if (bad || !lib) {
    if (lib) LLVMDisposeModule(lib);
    return fail_llvm(cg, "reading the cached libdevice");
  }
  /* Its triple is nvptx64-nvidia-gpulibs: adopt ours to link without a warning. */
  LLVMSetTarget(lib, TRIPLE);
  LLVMSetDataLayout(lib, LLVMGetDataLayoutStr(cg->mod));
  if (LLVMLinkModules2(cg->mod, lib) || cg->n_errors) /* consumes lib */
    return fail_llvm(cg, "linking libdevice");
  return FRNN_OK;
}

frnn_status cg_finish(codegen *cg, int emit_llvm, char **text_out) {
  if (text_out) *text_out = NULL;
  if (!cg || !text_out)
    return diag_fail(cg ? cg->ctx : NULL, FRNN_E_ARG, "cg_finish: null argument");
  if (!cg->mod) return diag_fail(cg->ctx, FRNN_E_ARG, "cg_finish: no module (cg_begin failed)");
  if (cg->n_errors) return fail_llvm(cg, "code generation failed");

  char *msg = NULL;
  LLVMBool invalid = LLVMVerifyModule(cg->mod, LLVMReturnStatusAction, &msg);
  frnn_status st = invalid ? report_invalid(cg, msg) : FRNN_OK;
  LLVMDisposeMessage(msg);
  if (st) return st;
  if (emit_llvm == 2) return print_module(cg, text_out);

  if (cg->need_libdevice && (st = link_libdevice(cg))) return st;
  /* Everything but the kernels is internal: O3 inlines and drops the rest. */
  for (LLVMValueRef f = LLVMGetFirstFunction(cg->mod); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f) && LLVMGetFunctionCallConv(f) != CC_PTX_KERNEL)
      LLVMSetLinkage(f, LLVMInternalLinkage);
  LLVMAddModuleFlag(cg->mod, LLVMModuleFlagBehaviorOverride, "nvvm-reflect-ftz", 16,
                    LLVMValueAsMetadata(LLVMConstInt(cg->t_i32, cg->ftz ? 1 : 0, 0)));

  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(cg->mod, "default<O3>", cg->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (e) {
    char *m = LLVMGetErrorMessage(e);
    st = diag_fail(cg->ctx, FRNN_E_LLVM, "LLVM passes failed: %s", m);
    LLVMDisposeErrorMessage(m);
    return st;
  }
  if (cg->n_errors) return fail_llvm(cg, "LLVM optimisation");
  if (emit_llvm) return print_module(cg, text_out);

  LLVMMemoryBufferRef out = NULL;
  char *err = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(cg->tm, cg->mod, LLVMAssemblyFile, &err, &out)) {
    st = diag_fail(cg->ctx, FRNN_E_LLVM, "PTX emission failed: %s",
                   cg->n_errors ? cg->first_error : err ? err : "?");
    LLVMDisposeMessage(err);
    return st;
  }
  /* With a handler installed an error still "succeeds" (a bogus call). */
  if (cg->n_errors) st = fail_llvm(cg, "PTX emission");
  else st = take_text(cg, LLVMGetBufferStart(out), LLVMGetBufferSize(out), text_out);
  LLVMDisposeMemoryBuffer(out);
  return st;
}

/* ---------------------------------------------------------------- ptxas */
extern char **environ;

static char *read_fd(int fd) {
  size_t cap = 4096, n = 0;
  char *s = malloc(cap);
  if (!s || lseek(fd, 0, SEEK_SET) < 0) return s ? (s[0] = 0, s) : NULL;
  for (;;) {
    if (n + 1 >= cap) {
      char *t = realloc(s, cap *= 2);
      if (!t) break;
      s = t;
    }
    ssize_t r = read(fd, s + n, cap - n - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  s[n] = 0;
  return s;
}

frnn_status cg_ptxas_check(frnn_ctx *ctx, const char *ptx, const char *arch, char **report) {
  if (report) *report = NULL;
  if (!ptx || !report) return diag_fail(ctx, FRNN_E_ARG, "cg_ptxas_check: null argument");
  target t;
  frnn_status st = target_parse(ctx, arch, &t);
  if (st) return st;
  const char *ptxas = getenv("FRNN_PTXAS");
  if (!ptxas || !*ptxas) ptxas = "/usr/local/cuda/bin/ptxas";
  if (access(ptxas, X_OK) != 0)
    return diag_fail(ctx, FRNN_E_UNSUPPORTED, "ptxas not found at '%s' (set FRNN_PTXAS)", ptxas);

  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  char in[1024], log[1024], bin[1024], archarg[32];
  snprintf(in, sizeof in, "%s/frnn-ptxas-XXXXXX.ptx", dir);
  snprintf(log, sizeof log, "%s/frnn-ptxas-XXXXXX.log", dir);
  snprintf(bin, sizeof bin, "%s/frnn-ptxas-XXXXXX.cubin", dir);
  snprintf(archarg, sizeof archarg, "-arch=%s", t.arch);
  int fin = mkstemps(in, 4), flog = mkstemps(log, 4), fbin = mkstemps(bin, 6);
  size_t len = strlen(ptx), done = 0;
  while (fin >= 0 && done < len) {
    ssize_t w = write(fin, ptx + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    done += (size_t)w;
  }
  pid_t pid = -1;
  int spawned = -1, wstatus = 0;
  if (fin >= 0 && flog >= 0 && fbin >= 0 && done == len) {
    char *argv[] = {(char *)ptxas, archarg, "-v", in, "-o", bin, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, flog, 1);
    posix_spawn_file_actions_adddup2(&fa, flog, 2);
    spawned = posix_spawn(&pid, ptxas, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (spawned == 0)
      while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {}
  }
  if (spawned == 0) *report = read_fd(flog);
  if (fin >= 0) close(fin), unlink(in);
  if (flog >= 0) close(flog), unlink(log);
  if (fbin >= 0) close(fbin), unlink(bin);
  if (spawned != 0)
    return diag_fail(ctx, FRNN_E_IO, "cannot run '%s' on a temporary file in %s: %s", ptxas, dir,
                     strerror(spawned > 0 ? spawned : errno));
  if (!*report) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory reading ptxas output");
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
    return diag_fail(ctx, FRNN_E_LLVM, "ptxas %s rejected the PTX (status %d):\n%s", archarg,
                     WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1, *report);
  return FRNN_OK;
}
