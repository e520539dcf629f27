/* Two (or more) C threads dispatching and calling libtpp kernels at once: each thread
 * asks for its own shapes and for shared ones, repeatedly, and checks every result. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <tpp.h>

enum { THREADS = 4, ROUNDS = 25 };

static void *work(void *arg) {
    long id = (long)arg;
    long bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        int m = 3 + (int)id + (r % 3), n = 17 + r % 5;   /* new shapes and shared ones */
        tpp_desc d = {0};
        d.kind = (r % 2) ? "relu" : "abs"; d.m = m; d.n = n;
        tpp_kernel k = tpp_dispatch_unary(&d);
        if (!k) { fprintf(stderr, "thread %ld: %s\n", id, tpp_last_error()); return (void *)1; }
        float *x = malloc(sizeof(float) * m * n), *y = malloc(sizeof(float) * m * n);
        for (int i = 0; i < m * n; i++) x[i] = (float)((i * 7 + (int)id) % 13) - 6.0f;
        tpp_tensor args[2] = {{x, n}, {y, n}};
        k(args);
        for (int i = 0; i < m * n; i++) {
            float want = (r % 2) ? (x[i] > 0 ? x[i] : 0.0f) : (x[i] < 0 ? -x[i] : x[i]);
            bad += y[i] != want;
        }
        free(x);
        free(y);
        tpp_desc wrong = {0};                /* errors are per thread */
        wrong.kind = "relu"; wrong.m = 0; wrong.n = 1;
        if (tpp_dispatch_unary(&wrong) != NULL || tpp_last_error_code() != TPP_ERROR_DESCRIPTOR) bad++;
    }
    return (void *)bad;
}

int main(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, work, (void *)i);
    long bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long)r;
    }
    printf("%s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
