/* tpp.h: the C interface of libtpp (Tensor Processing Primitives, JIT-compiled).
 *
 * Dispatch once, call many times (LIBXSMM's contract):
 *
 *     tpp_desc d = {0};                   // zero fields are the defaults
 *     d.m = 64; d.n = 64; d.k = 64;
 *     d.flags = TPP_FLAG_BETA_0;          // C = A B (without it: C += A B)
 *     tpp_kernel gemm = tpp_dispatch_gemm(&d);
 *     if (!gemm) { fprintf(stderr, "%s\n", tpp_last_error()); ... }
 *     tpp_tensor args[3] = {{a, 64}, {b, 64}, {c, 64}};
 *     gemm(args);                          // a direct call into the generated code
 *
 * A kernel takes one array of tpp_tensor {data, ld}: its operands in order, inputs
 * first, outputs last (ld = row stride in elements):
 *   unary:   {x, out}; two outputs for reduce_max/reduce_min with TPP_FLAG_ARGIDX
 *            ({x, values, int64 indices}); reductions write a 1 x n (columns) or
 *            m x 1 (rows) result.
 *   binary:  {a, b, out}; a broadcast input is a row (1 x n), a column (m x 1) or a
 *            scalar (1 x 1).
 *   gemm:    {a, b, [bias 1 x n], [residual m x n], c}, the epilogue's inputs in the
 *            order the epilogue names them. lda/ldb/ldc are compiled into the kernel:
 *            the ld of a, b and c in the call must be the descriptor's.
 *   brgemm:  gemm's list, then {NULL, count}; the offset variant passes a and b as
 *            base pointers and then {int64 offsets of A_i, count}, {int64 offsets of
 *            B_i, count} instead; the address variant passes arrays of `count`
 *            pointers as a and b. Any count >= 0 is safe for the kernel's own buffers
 *            (one too large for memory makes it read the blocks in place, slowly); every
 *            block must lie in memory the caller owns.
 * Unary and binary kernels read each ld at call time.
 *
 * Sizes: m, n, k from 1 to 2**31 - 1; no operand (rows, ld and element size together)
 * and no brgemm stride may span more than 2**48 bytes (TPP_ERROR_DESCRIPTOR otherwise).
 *
 * libtpp starts an embedded Python interpreter on the first call (tpp_init or a
 * dispatch). It finds the tpp package of the Python that built the library; to
 * use another, set PYTHONPATH. PYTHONHOME must not point at a virtual
 * environment. Dispatch is thread-safe; a kernel may be called from any thread
 * at once. Nothing here aborts the program: failures return NULL or an error
 * code, with a message in tpp_last_error() (per thread).
 */
#ifndef TPP_H
#define TPP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One operand of a kernel call (also declared by the headers tpp-aot writes). */
#ifndef TPP_TENSOR_DEFINED
#define TPP_TENSOR_DEFINED
typedef struct tpp_tensor {
    void *data;                       /* first element */
    int64_t ld;                       /* row stride in elements (brgemm's count entry: the count) */
} tpp_tensor;
#endif

/* BEGIN DECLARATIONS (read by the library build: declarations and integer #defines only) */
#define TPP_OK 0
#define TPP_ERROR_DESCRIPTOR 1        /* a descriptor that names no kernel (bad kind, m = 0, ...) */
#define TPP_ERROR_DTYPE 2             /* a dtype or dtype combination the kind does not offer */
#define TPP_ERROR_TARGET 3            /* an unknown target, or one this machine cannot run */
#define TPP_ERROR_ARGUMENT 4          /* a NULL descriptor, unknown flags, a string not UTF-8 */
#define TPP_ERROR_INTERNAL 5          /* anything else (the message says what) */

#define TPP_FLAG_TRANS_A 1            /* gemm/brgemm: A is stored transposed (k x m) */
#define TPP_FLAG_TRANS_B 2            /* gemm/brgemm: B is stored transposed (n x k) */
#define TPP_FLAG_BETA_0 4             /* gemm/brgemm: C = op(A) op(B) (default: C += ...) */
#define TPP_FLAG_B_VNNI 8             /* gemm/brgemm bf16/u8s8: B is VNNI packed */
#define TPP_FLAG_REDUCE_ROWS 16       /* unary reduce_*: one result per row (m x 1) */
#define TPP_FLAG_REDUCE_COLS 32       /* unary reduce_*: one result per column (1 x n) */
#define TPP_FLAG_ARGIDX 64            /* unary reduce_max/reduce_min: also the indices */
#define TPP_FLAG_ALPHA 128            /* unary: use `alpha` (elu, leaky_relu, ...) */

typedef void (*tpp_kernel)(const tpp_tensor *args);

typedef struct tpp_desc {
    const char *kind;                 /* unary/binary kind: "relu", "exp", "add", ... (unused by gemm) */
    int64_t m, n, k;                  /* the tile: m x n; gemm/brgemm: op(A) is m x k */
    int64_t lda, ldb, ldc;            /* gemm/brgemm row strides in elements; 0: tight */
    int64_t stride_a, stride_b;       /* brgemm stride variant: elements between A_i (B_i); 0: tight */
    const char *dtype;                /* "f32" (NULL), "f64", "bf16", "u8s8" (gemm), "i8", ... */
    const char *out_dtype;            /* NULL: the kind's default (bf16 gemm: f32) */
    const char *broadcast_a;          /* binary: "none" (NULL), "row", "col", "scalar" */
    const char *broadcast_b;
    const char *epilogue;             /* gemm/brgemm: e.g. "bias,relu"; NULL: none */
    const char *variant;              /* brgemm: "stride" (NULL), "offset", "address" */
    const char *target;               /* NULL: this machine; "x86-avx2", "x86-avx512" */
    double alpha;                     /* unary parameter, read with TPP_FLAG_ALPHA; finite */
    uint32_t flags;                   /* TPP_FLAG_* */
} tpp_desc;

/* Equation TPPs: an expression tree over unary, binary and row-reduce primitives, given
 * as nodes in post-order (a node's operands are earlier nodes; the last is the root). */
#define TPP_EQ_ARG 0                  /* input `a` (0, 1, ...); kind: its broadcast "full" (NULL),
                                         "row", "col" or "scalar"; dtype: "f32" (NULL), "bf16", "f64" */
#define TPP_EQ_CONST 1                /* the number `value` */
#define TPP_EQ_UNARY 2                /* kind (a one-input unary kind) of node a; alpha: `value` with TPP_FLAG_ALPHA */
#define TPP_EQ_BINARY 3               /* kind ("add", "sub", "mul", "div", "max", "min") of nodes a, b */
#define TPP_EQ_REDUCE 4               /* kind ("sum", "max", "min") of node a over each row */

typedef struct tpp_eq_node {
    int32_t op;                       /* TPP_EQ_* */
    int32_t a, b;                     /* operands (earlier nodes' indices); TPP_EQ_ARG: the input's index */
    const char *kind;
    const char *dtype;
    double value;
    uint32_t flags;                   /* TPP_FLAG_ALPHA for a unary node's alpha */
} tpp_eq_node;

typedef struct tpp_equation_desc {
    int64_t m, n;                     /* the tile */
    int64_t count;                    /* nodes */
    const tpp_eq_node *nodes;
    const char *out_dtype;            /* NULL: the first input's dtype */
    const char *target;               /* NULL: this machine */
} tpp_equation_desc;

int tpp_init(void);                   /* start the interpreter and import tpp; TPP_OK or an error */
tpp_kernel tpp_dispatch_unary(const tpp_desc *desc);
tpp_kernel tpp_dispatch_binary(const tpp_desc *desc);
tpp_kernel tpp_dispatch_gemm(const tpp_desc *desc);
tpp_kernel tpp_dispatch_brgemm(const tpp_desc *desc);
/* The kernel of an equation; called with the inputs then the output (M x N, or M values
 * where the root is one value per row). */
tpp_kernel tpp_dispatch_equation(const tpp_equation_desc *desc);
int tpp_last_error_code(void);        /* of this thread's last call: TPP_OK or TPP_ERROR_* */
const char *tpp_last_error(void);     /* its message ("" after a success) */
const char *tpp_version(void);
/* END DECLARATIONS */

#ifdef __cplusplus
}
#endif

#endif /* TPP_H */
