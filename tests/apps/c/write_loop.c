/*
 * Benchmark: N fd_write calls of 64 bytes each to a file in the preopened directory (N = argv[1],
 * default 100000; the file is argv[2], default "write_loop.out"). Prints N and the final file size.
 */
#include "wasi_check.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    const char *path = argc > 2 ? argv[2] : "write_loop.out";
    static const char block[65] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    __wasi_fd_t fd;
    __wasi_errno_t e = open_at(PREOPEN, path, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, 0, &fd);
    if (e != 0) {
        printf("path_open %s -> %s\n", path, errname(e));
        return 1;
    }
    __wasi_ciovec_t iov = {(const uint8_t *)block, 64};
    for (long i = 0; i < n; i++) {
        __wasi_size_t written = 0;
        if (__wasi_fd_write(fd, &iov, 1, &written) != 0 || written != 64) {
            printf("fd_write failed at call %ld\n", i);
            return 1;
        }
    }
    __wasi_filestat_t st;
    (void)__wasi_fd_filestat_get(fd, &st);
    (void)__wasi_fd_close(fd);
    printf("fd_write calls: %ld, file size: %llu\n", n, (unsigned long long)st.size);
    return 0;
}
