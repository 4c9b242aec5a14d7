/*
 * sched_yield, proc_raise and proc_exit. proc_raise is not in wasi-libc's headers any more (signals
 * left WASI), so it is imported directly; runtimes answer ENOSYS or ENOTSUP rather than deliver a
 * signal. The program ends through proc_exit(42) after flushing stdout: anything after it must not run.
 */
#include "wasi_check.h"

__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise")))
int32_t raw_proc_raise(int32_t sig);

int main(int argc, char **argv) {
    SHOW("sched_yield", __wasi_sched_yield());
    for (int i = 0; i < 100; i++) (void)__wasi_sched_yield();
    check(1, "100 yields returned");
    /* Signal numbers from witx `signal`: 0 none, 6 abrt, 15 term. */
    printf("proc_raise 0 -> %s\n", errname((__wasi_errno_t)raw_proc_raise(0)));
    printf("proc_raise 15 -> %s\n", errname((__wasi_errno_t)raw_proc_raise(15)));
    int code = argc > 1 ? atoi(argv[1]) : 42;
    printf("proc_exit %d\n", code);
    fflush(stdout);
    __wasi_proc_exit((__wasi_exitcode_t)code);
    puts("FAIL proc_exit returned");
    return 1;
}
