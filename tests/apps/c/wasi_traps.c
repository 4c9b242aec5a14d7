/*
 * Arguments that wasmtime answers with a trap rather than an errno: an enum value that witx does not
 * define, a flag word with bits that no flag defines, and pointers outside linear memory. Also a trap of the program's
 * own (unreachable) and stack exhaustion. argv[1] names the case; each run prints its name, makes the
 * call, and prints "returned ERRNO" only if the runtime returned instead of trapping.
 */
#include "wasi_check.h"

#define IMPORT(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))
IMPORT("clock_time_get") int32_t raw_clock_time_get(int32_t id, int64_t precision, int32_t out);
IMPORT("fd_seek") int32_t raw_fd_seek(int32_t fd, int64_t offset, int32_t whence, int32_t out);
IMPORT("fd_advise") int32_t raw_fd_advise(int32_t fd, int64_t offset, int64_t len, int32_t advice);
IMPORT("fd_write") int32_t raw_fd_write(int32_t fd, int32_t iovs, int32_t iovs_len, int32_t out);
IMPORT("fd_tell") int32_t raw_fd_tell(int32_t fd, int32_t out);
IMPORT("path_open")
int32_t raw_path_open(int32_t fd, int32_t dirflags, int32_t path, int32_t path_len, int32_t oflags,
                      int64_t base, int64_t inheriting, int32_t fdflags, int32_t out);
IMPORT("fd_filestat_set_times") int32_t raw_fd_filestat_set_times(int32_t fd, int64_t a, int64_t m, int32_t flags);
IMPORT("fd_fdstat_set_flags") int32_t raw_fd_fdstat_set_flags(int32_t fd, int32_t flags);
IMPORT("random_get") int32_t raw_random_get(int32_t buf, int32_t len);
IMPORT("args_get") int32_t raw_args_get(int32_t argv, int32_t buf);

static int32_t open_flags(int32_t dirflags, int32_t oflags, int32_t fdflags) {
    static __wasi_fd_t fd;
    return raw_path_open(PREOPEN, dirflags, (int32_t)(uintptr_t) "t.txt", 5, oflags, (int64_t)RIGHTS_FILE_ALL,
                         (int64_t)RIGHTS_FILE_ALL, fdflags, (int32_t)(uintptr_t)&fd);
}

#pragma clang diagnostic ignored "-Winfinite-recursion"
static int depth(int n) {
    volatile char pad[1024];
    pad[0] = (char)n;
    return n + depth(n + 1) + pad[0];
}

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "";
    static uint64_t out;
    int32_t e = -1;
    printf("case %s\n", c);
    fflush(stdout);
    /* A seekable file for the cases that need one. */
    __wasi_fd_t file;
    make_file("t.txt", "t");
    (void)open_at(PREOPEN, "t.txt", 0, 0, &file);
    /* Beyond any memory this program has: linear memory is at most 4 GiB, and far less here. */
    const int32_t FAR = (int32_t)0xfffffff0u;
    static __wasi_ciovec_t far_buf = {(const uint8_t *)0xffff0000u, 64};
    if (!strcmp(c, "clock_id")) e = raw_clock_time_get(9, 0, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "whence")) e = raw_fd_seek(1, 0, 7, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "advice")) e = raw_fd_advise(1, 0, 0, 9);
    else if (!strcmp(c, "iovec_out_of_bounds")) e = raw_fd_write(1, FAR, 1, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "buffer_out_of_bounds")) e = raw_fd_write(1, (int32_t)(uintptr_t)&far_buf, 1, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "iovec_count_huge")) e = raw_fd_write(1, (int32_t)(uintptr_t)&far_buf, 0x10000000, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "oflags")) e = open_flags(0, 0x10, 0);
    else if (!strcmp(c, "fdflags")) e = open_flags(0, 0, 0x20);
    else if (!strcmp(c, "lookupflags")) e = open_flags(0x2, 0, 0);
    else if (!strcmp(c, "fstflags")) e = raw_fd_filestat_set_times((int32_t)file, 0, 0, 0x10);
    else if (!strcmp(c, "set_flags")) e = raw_fd_fdstat_set_flags((int32_t)file, 0x20);
    else if (!strcmp(c, "result_out_of_bounds")) e = raw_fd_tell((int32_t)file, FAR);
    else if (!strcmp(c, "path_out_of_bounds"))
        e = raw_path_open(PREOPEN, 0, FAR, 8, 0, 0, 0, 0, (int32_t)(uintptr_t)&out);
    else if (!strcmp(c, "random_out_of_bounds")) e = raw_random_get(FAR, 64);
    else if (!strcmp(c, "args_out_of_bounds")) e = raw_args_get(FAR, FAR);
    else if (!strcmp(c, "unreachable")) __builtin_trap();
    else if (!strcmp(c, "stack_overflow")) e = depth(0);
    else {
        printf("unknown case\n");
        return 2;
    }
    printf("returned %s\n", errname((__wasi_errno_t)e));
    return 0;
}
