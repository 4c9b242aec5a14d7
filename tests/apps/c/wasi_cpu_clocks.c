/*
 * clock_res_get and clock_time_get on the CPU-time clocks (process_cputime_id, thread_cputime_id).
 *
 * Kept apart from wasi_clock_random.c because runtimes differ here: wasmtime's preview 1 answers EBADF
 * for both, while a runtime that measures CPU time answers SUCCESS. When a clock is there, its time must
 * advance over a busy loop and never go backwards.
 */
#include "wasi_check.h"

static void probe(__wasi_clockid_t id, const char *name) {
    __wasi_timestamp_t res = 0, t0 = 0, t1 = 0;
    __wasi_errno_t e = __wasi_clock_res_get(id, &res);
    printf("clock_res_get %s -> %s\n", name, errname(e));
    if (e == 0) check(res > 0, "resolution is positive");
    e = __wasi_clock_time_get(id, 1, &t0);
    printf("clock_time_get %s -> %s\n", name, errname(e));
    if (e != 0) return;
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 20000000; i++) x += i;
    (void)__wasi_clock_time_get(id, 1, &t1);
    check(x > 0 && t1 > t0, "cpu time advances over a busy loop");
}

int main(void) {
    probe(__WASI_CLOCKID_PROCESS_CPUTIME_ID, "process_cputime");
    probe(__WASI_CLOCKID_THREAD_CPUTIME_ID, "thread_cputime");
    return finish(0);
}
