/*
 * The three standard streams: reads all of stdin (printing its length and a checksum, and echoing it
 * upper-cased to stdout), writes to stderr, shows each stream's fdstat, and that they cannot seek.
 */
#include <ctype.h>

#include "wasi_check.h"

int main(void) {
    static char buf[1 << 16];
    size_t total = 0;
    for (;;) {
        __wasi_iovec_t iov = {(uint8_t *)buf + total, sizeof buf - total};
        __wasi_size_t n = 0;
        __wasi_errno_t e = __wasi_fd_read(0, &iov, 1, &n);
        if (e != 0) {
            printf("fd_read stdin -> %s\n", errname(e));
            break;
        }
        if (n == 0 || total + n == sizeof buf) {
            total += n;
            break;
        }
        total += n;
    }
    uint32_t sum = 0;
    for (size_t i = 0; i < total; i++) sum = sum * 31 + (uint8_t)buf[i];
    printf("stdin: %zu bytes, checksum %08x\n", total, (unsigned)sum);
    for (size_t i = 0; i < total; i++) buf[i] = (char)toupper((unsigned char)buf[i]);
    printf("upper: %.*s", (int)total, buf);
    if (total && buf[total - 1] != '\n') printf("\n");

    __wasi_size_t n;
    SHOW("fd_write stderr", write_str(2, "this goes to stderr\n", &n));
    check(n == 20, "stderr took 20 bytes");
    for (__wasi_fd_t fd = 0; fd < 3; fd++) {
        __wasi_fdstat_t st;
        memset(&st, 0, sizeof st);
        __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
        printf("fd_fdstat_get %d -> %s read=%d write=%d\n", fd, errname(e),
               !!(st.fs_rights_base & __WASI_RIGHTS_FD_READ), !!(st.fs_rights_base & __WASI_RIGHTS_FD_WRITE));
    }
    __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    SHOW("fd_write stdin", __wasi_fd_write(0, &ciov, 1, &n));
    /* Through libc too. */
    fprintf(stderr, "fprintf to stderr\n");
    printf("done\n");
    return finish(0);
}
