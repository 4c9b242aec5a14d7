/*
 * Malformed arguments that a runtime must answer with an errno (not a crash): paths that are not
 * UTF-8 or contain NUL, and oversized lengths and offsets. Calls go through
 * the raw imports so that the exact (pointer, length) pairs reach the runtime.
 * Cases that runtimes answer with a trap (flag words with undefined bits, bad pointers) are in
 * wasi_traps.c.
 */
#include "wasi_check.h"

#define IMPORT(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))

IMPORT("path_open")
int32_t raw_path_open(int32_t fd, int32_t dirflags, int32_t path, int32_t path_len, int32_t oflags,
                      int64_t base, int64_t inheriting, int32_t fdflags, int32_t out);
IMPORT("path_create_directory") int32_t raw_path_create_directory(int32_t fd, int32_t path, int32_t len);
IMPORT("path_filestat_get")
int32_t raw_path_filestat_get(int32_t fd, int32_t flags, int32_t path, int32_t len, int32_t out);

static __wasi_fd_t opened;

static void open_raw(const char *label, const char *path, size_t len, int32_t dirflags, int32_t oflags,
                     int32_t fdflags) {
    __wasi_fd_t fd = 0;
    int32_t e = raw_path_open(PREOPEN, dirflags, (int32_t)(uintptr_t)path, (int32_t)len, oflags,
                              (int64_t)RIGHTS_FILE_ALL, (int64_t)RIGHTS_FILE_ALL, fdflags, (int32_t)(uintptr_t)&fd);
    printf("path_open %s -> %s\n", label, errname((__wasi_errno_t)e));
    if (e == 0) {
        if (opened == 0) opened = fd;
        else (void)__wasi_fd_close(fd);
    }
}

int main(void) {
    make_file("ok.txt", "ok\n");
    puts("== paths");
    open_raw("ok.txt", "ok.txt", 6, 0, 0, 0);
    open_raw("invalid UTF-8", "ok\xff.txt", 7, 0, __WASI_OFLAGS_CREAT, 0);
    open_raw("lone continuation byte", "\x80", 1, 0, __WASI_OFLAGS_CREAT, 0);
    open_raw("embedded NUL", "ok.txt\0junk", 11, 0, 0, 0);
    open_raw("NUL inside the length", "ok.txt\0", 7, 0, 0, 0);
    open_raw("length 0", "ok.txt", 0, 0, 0, 0);
    open_raw("length shorter than the string", "ok.txtXYZ", 6, 0, 0, 0);
    static char longname[300];
    memset(longname, 'n', sizeof longname);
    open_raw("a 300-byte name", longname, sizeof longname, 0, __WASI_OFLAGS_CREAT, 0);
    __wasi_filestat_t st;
    printf("path_filestat_get invalid UTF-8 -> %s\n",
           errname((__wasi_errno_t)raw_path_filestat_get(PREOPEN, 0, (int32_t)(uintptr_t)"\xc3\x28", 2,
                                                        (int32_t)(uintptr_t)&st)));
    printf("path_create_directory embedded NUL -> %s\n",
           errname((__wasi_errno_t)raw_path_create_directory(PREOPEN, (int32_t)(uintptr_t)"a\0b", 3)));

    puts("== lengths");
    char buf[16];
    __wasi_size_t n = 0;
    __wasi_iovec_t iov[2] = {{(uint8_t *)buf, sizeof buf}, {(uint8_t *)buf, 0}};
    SHOW("fd_read with no iovecs", __wasi_fd_read(opened, iov, 0, &n));
    printf("  bytes: %u\n", (unsigned)n);
    SHOW("fd_read with an empty iovec first", __wasi_fd_read(opened, &iov[1], 1, &n));
    printf("  bytes: %u\n", (unsigned)n);
    SHOW("fd_seek to 2^62", __wasi_fd_seek(opened, (__wasi_filedelta_t)1 << 62, __WASI_WHENCE_SET, (__wasi_filesize_t *)buf));
    SHOW("fd_pread at offset 2^63-1", __wasi_fd_pread(opened, iov, 1, 0x7fffffffffffffffull, &n));
    SHOW("fd_filestat_set_size 2^63", __wasi_fd_filestat_set_size(opened, 0x8000000000000000ull));
    (void)__wasi_fd_close(opened);
    return finish(0);
}
