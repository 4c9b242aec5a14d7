/*
 * Benchmark: N calls of clock_time_get(monotonic) (N = argv[1], default 1000000). Prints N and whether
 * time went forward, never the time itself, so the output is the same on every run.
 */
#include "wasi_check.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    __wasi_timestamp_t first = 0, t = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &first);
    for (long i = 0; i < n; i++) {
        if (__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t) != 0) {
            printf("clock_time_get failed at call %ld\n", i);
            return 1;
        }
    }
    printf("clock_time_get calls: %ld, forward: %s\n", n, t >= first ? "yes" : "no");
    return 0;
}
