/* Kernels compiled ahead of time by tpp-aot: no Python, no JIT at run time.
 *
 *   tpp-aot examples/c/kernels.json --out build/aot --name exkernels
 *   cc -O2 -Ibuild/aot examples/c/aot.c build/aot/libexkernels.a -lm
 *
 * Each kernel is checked against a plain C loop.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "exkernels.h"

enum { M = 37, N = 45, K = 29, BATCH = 3 };

static int fails = 0;
static void expect(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "FAILED: %s\n", what); fails++; }
}

static double gemm_ref(const float *a, const float *b, int i, int j, int b_transposed) {
    double s = 0;
    for (int p = 0; p < K; p++) s += (double)a[i * K + p] * (b_transposed ? b[j * K + p] : b[p * N + j]);
    return s;
}

int main(void) {
    static float x[M * N], y[M * N], a[BATCH * M * K], b[BATCH * K * N], bt[N * K], c[M * N], bias[N];
    for (int i = 0; i < M * N; i++) x[i] = (float)((i * 37) % 23) - 11.0f;
    for (int i = 0; i < BATCH * M * K; i++) a[i] = (float)((i * 13) % 17) / 8.0f - 1.0f;
    for (int i = 0; i < BATCH * K * N; i++) b[i] = (float)((i * 7) % 11) / 5.0f - 1.0f;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < N; j++) bt[j * K + i] = b[i * N + j];
    for (int j = 0; j < N; j++) bias[j] = (float)j / N - 0.5f;

    ex_relu((tpp_tensor[]){{x, N}, {y, N}});
    int ok = 1;
    for (int i = 0; i < M * N; i++) ok &= y[i] == (x[i] > 0 ? x[i] : 0.0f);
    expect(ok, "relu");

    ex_add_row((tpp_tensor[]){{x, N}, {bias, N}, {y, N}});
    ok = 1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) ok &= y[i * N + j] == x[i * N + j] + bias[j];
    expect(ok, "add with a row broadcast");

    double worst = 0;
    ex_gemm((tpp_tensor[]){{a, K}, {b, N}, {bias, N}, {c, N}});
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double r = gemm_ref(a, b, i, j, 0) + bias[j];
            worst = fmax(worst, fabs(c[i * N + j] - (r > 0 ? r : 0)));
        }
    expect(worst < 1e-4, "gemm + bias + relu");

    worst = 0;
    ex_gemm_bt((tpp_tensor[]){{a, K}, {bt, K}, {c, N}});
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) worst = fmax(worst, fabs(c[i * N + j] - gemm_ref(a, bt, i, j, 1)));
    expect(worst < 1e-4, "gemm with B transposed");

    worst = 0;
    ex_brgemm((tpp_tensor[]){{a, K}, {b, N}, {c, N}, {NULL, BATCH}});
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double r = 0;
            for (int t = 0; t < BATCH; t++) r += gemm_ref(a + t * M * K, b + t * K * N, i, j, 0);
            worst = fmax(worst, fabs(c[i * N + j] - r));
        }
    expect(worst < 1e-4, "brgemm over a stride batch");

    printf("%s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
