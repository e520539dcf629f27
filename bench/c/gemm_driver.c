/* tpp-bench capi: GEMM kernels dispatched through libtpp and timed in a C loop, so the
 * numbers compare directly with LIBXSMM's C-side ones.
 *
 *   gemm_driver M N K MIN_MS REPS
 *
 * prints (one "key value..." per line):
 *   init_s            tpp_init: interpreter start and import of tpp
 *   first_dispatch_s  the first tpp_dispatch_gemm (a JIT compile, or a disk-cache read)
 *   cached_dispatch_us  a later dispatch of the same descriptor (mean of 1000)
 *   calls             kernel calls per repetition
 *   gflops            one GFLOP/s figure per repetition (C = A B, beta = 0)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tpp.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *aligned(size_t count) {
    void *p = NULL;
    if (posix_memalign(&p, 64, count * sizeof(float) + 64)) return NULL;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s M N K MIN_MS REPS\n", argv[0]);
        return 2;
    }
    long m = atol(argv[1]), n = atol(argv[2]), k = atol(argv[3]);
    double min_s = atof(argv[4]) * 1e-3;
    int reps = atoi(argv[5]);
    double t0 = now();
    if (tpp_init() != TPP_OK) {
        fprintf(stderr, "tpp_init: %s\n", tpp_last_error());
        return 1;
    }
    double t1 = now();
    tpp_desc d;
    memset(&d, 0, sizeof d);
    d.m = m; d.n = n; d.k = k; d.flags = TPP_FLAG_BETA_0;
    tpp_kernel gemm = tpp_dispatch_gemm(&d);
    double t2 = now();
    if (!gemm) {
        fprintf(stderr, "dispatch: %s\n", tpp_last_error());
        return 1;
    }
    for (int i = 0; i < 1000; i++)
        if (tpp_dispatch_gemm(&d) != gemm) return 1;
    double t3 = now();
    printf("init_s %.6f\nfirst_dispatch_s %.6f\ncached_dispatch_us %.3f\n", t1 - t0, t2 - t1, (t3 - t2) * 1e3);

    float *a = aligned(m * k), *b = aligned(k * n), *c = aligned(m * n);
    if (!a || !b || !c) return 1;
    for (long i = 0; i < m * k; i++) a[i] = (float)(i % 7) * 0.25f - 0.75f;
    for (long i = 0; i < k * n; i++) b[i] = (float)(i % 5) * 0.5f - 1.0f;
    tpp_tensor args[3] = {{a, k}, {b, n}, {c, n}};
    long calls = 1;
    for (;;) {                       /* calibrate: one repetition lasts at least MIN_MS */
        double s = now();
        for (long i = 0; i < calls; i++) gemm(args);
        if (now() - s >= min_s) break;
        calls *= 2;
    }
    printf("calls %ld\ngflops", calls);
    for (int r = 0; r < reps; r++) {
        double s = now();
        for (long i = 0; i < calls; i++) gemm(args);
        double e = now() - s;
        printf(" %.3f", 2.0 * m * n * k * calls / e * 1e-9);
    }
    printf("\n");
    /* a cheap use of the result, so the calls cannot be dropped */
    double sum = 0;
    for (long i = 0; i < m * n; i++) sum += c[i];
    printf("checksum %.6g\n", sum);
    free(a); free(b); free(c);
    return 0;
}
