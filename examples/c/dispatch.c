/* libtpp from C: dispatch a relu, an add with a row broadcast and a GEMM once, call
 * them, and compare with plain C loops; then show the error path.
 *
 *   tpp-capi build --out build/capi
 *   cc -O2 examples/c/dispatch.c $(PKG_CONFIG_PATH=build/capi/lib/pkgconfig pkg-config --cflags --libs tpp) -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <tpp.h>

enum { M = 37, N = 45, K = 29, LD = 48 };     /* remainders and a row stride wider than N */

static int fails = 0;
static void expect(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "FAILED: %s\n", what); fails++; }
}

int main(void) {
    if (tpp_init() != TPP_OK) {
        fprintf(stderr, "tpp_init: %s\n", tpp_last_error());
        return 2;
    }
    static float x[M * LD], y[M * LD], a[M * K], b[K * N], c[M * N], ref[M * N], bias[N];
    for (int i = 0; i < M * LD; i++) x[i] = (float)((i * 37) % 23) - 11.0f;
    for (int i = 0; i < M * K; i++) a[i] = (float)((i * 13) % 17) / 8.0f - 1.0f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 7) % 11) / 5.0f - 1.0f;
    for (int j = 0; j < N; j++) bias[j] = (float)j / N;

    /* relu on a 37 x 45 view of rows 48 apart, in place */
    tpp_desc d = {0};
    d.kind = "relu"; d.m = M; d.n = N;
    tpp_kernel relu = tpp_dispatch_unary(&d);
    expect(relu != NULL, "dispatch relu");
    if (relu) {
        tpp_tensor args[2] = {{x, LD}, {y, LD}};
        relu(args);
        int ok = 1;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                ok &= y[i * LD + j] == (x[i * LD + j] > 0 ? x[i * LD + j] : 0.0f);
        expect(ok, "relu matches the C loop");
    }

    /* add with b broadcast along the rows (b is 1 x n) */
    tpp_desc e = {0};
    e.kind = "add"; e.m = M; e.n = N; e.broadcast_b = "row";
    tpp_kernel add = tpp_dispatch_binary(&e);
    expect(add != NULL, "dispatch add");
    if (add) {
        tpp_tensor args[3] = {{x, LD}, {bias, N}, {y, LD}};
        add(args);
        int ok = 1;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                ok &= y[i * LD + j] == x[i * LD + j] + bias[j];
        expect(ok, "add (row broadcast) matches the C loop");
    }

    /* GEMM with a fused epilogue: C = relu(A B + bias) */
    tpp_desc g = {0};
    g.m = M; g.n = N; g.k = K; g.flags = TPP_FLAG_BETA_0; g.epilogue = "bias,relu";
    tpp_kernel gemm = tpp_dispatch_gemm(&g);
    expect(gemm != NULL, "dispatch gemm");
    if (gemm) {
        tpp_tensor args[4] = {{a, K}, {b, N}, {bias, N}, {c, N}};
        gemm(args);
        double worst = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = bias[j];
                for (int p = 0; p < K; p++) s += (double)a[i * K + p] * b[p * N + j];
                ref[i * N + j] = (float)(s > 0 ? s : 0);
                worst = fmax(worst, fabs(c[i * N + j] - ref[i * N + j]));
            }
        expect(worst < 1e-4, "gemm + bias + relu matches the C loop");
    }

    /* errors: a descriptor that names no kernel gives NULL and a message, never an abort */
    tpp_desc bad = {0};
    bad.kind = "relu"; bad.m = 0; bad.n = 4;
    expect(tpp_dispatch_unary(&bad) == NULL, "m = 0 is refused");
    expect(tpp_last_error_code() == TPP_ERROR_DESCRIPTOR, "m = 0 is a descriptor error");
    printf("m = 0: %s\n", tpp_last_error());
    bad.m = 4; bad.kind = "no_such_kind";
    expect(tpp_dispatch_unary(&bad) == NULL && tpp_last_error_code() == TPP_ERROR_DESCRIPTOR, "unknown kind");
    bad.kind = "add"; bad.dtype = "i8";
    expect(tpp_dispatch_binary(&bad) == NULL && tpp_last_error_code() == TPP_ERROR_DTYPE, "add on int8");
    expect(tpp_dispatch_gemm(NULL) == NULL && tpp_last_error_code() == TPP_ERROR_ARGUMENT, "NULL descriptor");
    tpp_desc t = g;
    t.target = "no-such-target";
    expect(tpp_dispatch_gemm(&t) == NULL && tpp_last_error_code() == TPP_ERROR_TARGET, "unknown target");
    expect(tpp_dispatch_gemm(&g) != NULL && tpp_last_error_code() == TPP_OK, "a success clears the error");

    printf("%s (libtpp %s)\n", fails ? "FAILED" : "ok", tpp_version());
    return fails ? 1 : 0;
}
