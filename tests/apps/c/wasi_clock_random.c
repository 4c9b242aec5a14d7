/*
 * clock_res_get, clock_time_get (realtime, monotonic), random_get, sched_yield.
 * Only relations are printed (resolution positive, monotonic time never goes
 * backwards, realtime after 2020), never the values, so transcripts compare.
 */
#include "wasi_check.h"

static const char *const CLOCKS[] = {"realtime", "monotonic"};

int main(void) {
    /* The CPU-time clocks are in wasi_cpu_clocks.c: runtimes differ on whether they exist. */
    for (__wasi_clockid_t id = 0; id < 2; id++) {
        __wasi_timestamp_t res = 0, t = 0;
        __wasi_errno_t e = __wasi_clock_res_get(id, &res);
        printf("clock_res_get %s -> %s\n", CLOCKS[id], errname(e));
        if (e == 0) check(res > 0 && res <= 1000000000ull, "resolution in (0, 1s]");
        e = __wasi_clock_time_get(id, 1, &t);
        printf("clock_time_get %s -> %s\n", CLOCKS[id], errname(e));
        if (e == 0) check(t > 0, "time is positive");
    }
    /* An unknown clock id is not an errno but a trap under wasmtime: see wasi_traps.c. */

    /* 2020-01-01T00:00:00Z in nanoseconds: any honest realtime clock is past it. */
    __wasi_timestamp_t now = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &now);
    check(now > 1577836800ull * 1000000000ull, "realtime is after 2020");

    __wasi_timestamp_t prev = 0, cur = 0;
    int monotonic = 1;
    for (int i = 0; i < 1000; i++) {
        if (__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &cur) != 0 || cur < prev) monotonic = 0;
        prev = cur;
    }
    check(monotonic, "monotonic clock never goes backwards over 1000 reads");

    /* random_get: only lengths and gross properties are printed. */
    static uint8_t a[4096], b[4096];
    SHOW("random_get len=0", __wasi_random_get(a, 0));
    SHOW("random_get len=1", __wasi_random_get(a, 1));
    SHOW("random_get len=4096", __wasi_random_get(a, sizeof a));
    SHOW("random_get len=4096 again", __wasi_random_get(b, sizeof b));
    check(memcmp(a, b, sizeof a) != 0, "two draws differ");
    int zeros = 0;
    for (size_t i = 0; i < sizeof a; i++) zeros += a[i] == 0;
    check(zeros < 64, "a 4096-byte draw is not mostly zeros");
    static uint8_t big[65536 + 7];
    SHOW("random_get len=65543", __wasi_random_get(big, sizeof big));

    SHOW("sched_yield", __wasi_sched_yield());
    return finish(0);
}
