/*
 * Shared helpers for the WASI test programs.
 *
 * Every program prints a transcript that must be identical under any correct
 * WASI preview 1 implementation: errno values are printed by their witx names
 * (wasi_snapshot_preview1.witx, type `errno`), never host-dependent numbers such
 * as inode numbers, timestamps or addresses.
 */
#ifndef WASI_CHECK_H
#define WASI_CHECK_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

/* The preopened directory is always the first descriptor after stdio. */
#define PREOPEN 3

/* Names in witx order: `errno` is an enum(u16) numbered from 0. */
static const char *const ERRNO_NAMES[] = {
    "SUCCESS", "E2BIG", "EACCES", "EADDRINUSE", "EADDRNOTAVAIL", "EAFNOSUPPORT", "EAGAIN",
    "EALREADY", "EBADF", "EBADMSG", "EBUSY", "ECANCELED", "ECHILD", "ECONNABORTED",
    "ECONNREFUSED", "ECONNRESET", "EDEADLK", "EDESTADDRREQ", "EDOM", "EDQUOT", "EEXIST",
    "EFAULT", "EFBIG", "EHOSTUNREACH", "EIDRM", "EILSEQ", "EINPROGRESS", "EINTR", "EINVAL",
    "EIO", "EISCONN", "EISDIR", "ELOOP", "EMFILE", "EMLINK", "EMSGSIZE", "EMULTIHOP",
    "ENAMETOOLONG", "ENETDOWN", "ENETRESET", "ENETUNREACH", "ENFILE", "ENOBUFS", "ENODEV",
    "ENOENT", "ENOEXEC", "ENOLCK", "ENOLINK", "ENOMEM", "ENOMSG", "ENOPROTOOPT", "ENOSPC",
    "ENOSYS", "ENOTCONN", "ENOTDIR", "ENOTEMPTY", "ENOTRECOVERABLE", "ENOTSOCK", "ENOTSUP",
    "ENOTTY", "ENXIO", "EOVERFLOW", "EOWNERDEAD", "EPERM", "EPIPE", "EPROTO",
    "EPROTONOSUPPORT", "EPROTOTYPE", "ERANGE", "EROFS", "ESPIPE", "ESRCH", "ESTALE",
    "ETIMEDOUT", "ETXTBSY", "EXDEV", "ENOTCAPABLE",
};

static inline const char *errname(__wasi_errno_t e) {
    static char unknown[32];
    if (e < sizeof(ERRNO_NAMES) / sizeof(ERRNO_NAMES[0])) return ERRNO_NAMES[e];
    snprintf(unknown, sizeof unknown, "E?%u", (unsigned)e);
    return unknown;
}

static int failures;

/* Line-buffered stdout, so a transcript is complete up to a trap (which skips libc's exit flush). */
__attribute__((constructor)) static void line_buffered_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

/* Print "<label> -> <ERRNO>" for a call whose only result is its errno. */
#define SHOW(label, call) printf("%s -> %s\n", (label), errname(call))

/* A self-check: the transcript says "ok" or "FAIL", and a failure changes the exit code. */
static inline void check(int cond, const char *what) {
    printf("%s %s\n", cond ? "ok" : "FAIL", what);
    if (!cond) failures++;
}

static inline const char *filetype_name(__wasi_filetype_t t) {
    switch (t) {
    case __WASI_FILETYPE_UNKNOWN: return "unknown";
    case __WASI_FILETYPE_BLOCK_DEVICE: return "block_device";
    case __WASI_FILETYPE_CHARACTER_DEVICE: return "character_device";
    case __WASI_FILETYPE_DIRECTORY: return "directory";
    case __WASI_FILETYPE_REGULAR_FILE: return "regular_file";
    case __WASI_FILETYPE_SOCKET_DGRAM: return "socket_dgram";
    case __WASI_FILETYPE_SOCKET_STREAM: return "socket_stream";
    case __WASI_FILETYPE_SYMBOLIC_LINK: return "symbolic_link";
    default: return "?";
    }
}

/* Rights a regular file descriptor needs for everything these programs do with it. */
#define RIGHTS_FILE_ALL                                                                        \
    (__WASI_RIGHTS_FD_DATASYNC | __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_SEEK |                \
     __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS | __WASI_RIGHTS_FD_SYNC | __WASI_RIGHTS_FD_TELL |        \
     __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_ADVISE | __WASI_RIGHTS_FD_ALLOCATE |             \
     __WASI_RIGHTS_FD_FILESTAT_GET | __WASI_RIGHTS_FD_FILESTAT_SET_SIZE |                      \
     __WASI_RIGHTS_FD_FILESTAT_SET_TIMES | __WASI_RIGHTS_POLL_FD_READWRITE)

/* Rights a directory descriptor needs to be used as the base of path_* calls. */
#define RIGHTS_DIR_ALL                                                                         \
    (__WASI_RIGHTS_PATH_CREATE_DIRECTORY | __WASI_RIGHTS_PATH_CREATE_FILE |                   \
     __WASI_RIGHTS_PATH_LINK_SOURCE | __WASI_RIGHTS_PATH_LINK_TARGET | __WASI_RIGHTS_PATH_OPEN | \
     __WASI_RIGHTS_FD_READDIR | __WASI_RIGHTS_PATH_READLINK |                                  \
     __WASI_RIGHTS_PATH_RENAME_SOURCE | __WASI_RIGHTS_PATH_RENAME_TARGET |                     \
     __WASI_RIGHTS_PATH_FILESTAT_GET | __WASI_RIGHTS_PATH_FILESTAT_SET_SIZE |                  \
     __WASI_RIGHTS_PATH_FILESTAT_SET_TIMES | __WASI_RIGHTS_FD_FILESTAT_GET |                   \
     __WASI_RIGHTS_FD_FILESTAT_SET_TIMES | __WASI_RIGHTS_PATH_SYMLINK |                        \
     __WASI_RIGHTS_PATH_REMOVE_DIRECTORY | __WASI_RIGHTS_PATH_UNLINK_FILE)

/* Open `path` under the preopen; returns the errno and stores the descriptor in *fd. */
static inline __wasi_errno_t open_at(__wasi_fd_t dir, const char *path, __wasi_oflags_t oflags,
                                     __wasi_fdflags_t fdflags, __wasi_fd_t *fd) {
    __wasi_rights_t base = (oflags & __WASI_OFLAGS_DIRECTORY) ? RIGHTS_DIR_ALL : RIGHTS_FILE_ALL;
    __wasi_rights_t inheriting = RIGHTS_DIR_ALL | RIGHTS_FILE_ALL;
    return __wasi_path_open(dir, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, path, oflags, base,
                            inheriting, fdflags, fd);
}

/* Write all of `text` to `fd` with one fd_write; returns the errno. */
static inline __wasi_errno_t write_str(__wasi_fd_t fd, const char *text, __wasi_size_t *n) {
    __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    return __wasi_fd_write(fd, &iov, 1, n);
}

/* Create (or truncate) a file holding `text`. */
static inline void make_file(const char *path, const char *text) {
    __wasi_fd_t fd;
    __wasi_size_t n;
    __wasi_errno_t e = open_at(PREOPEN, path, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, 0, &fd);
    if (e != 0) {
        printf("FAIL make_file %s: %s\n", path, errname(e));
        failures++;
        return;
    }
    e = write_str(fd, text, &n);
    if (e != 0 || n != strlen(text)) {
        printf("FAIL make_file write %s: %s\n", path, errname(e));
        failures++;
    }
    (void)__wasi_fd_close(fd);
}

/* Read up to cap-1 bytes of a whole file into buf (NUL-terminated); returns the errno. */
static inline __wasi_errno_t read_file(const char *path, char *buf, size_t cap) {
    __wasi_fd_t fd;
    __wasi_size_t n = 0;
    __wasi_errno_t e = open_at(PREOPEN, path, 0, 0, &fd);
    buf[0] = 0;
    if (e != 0) return e;
    __wasi_iovec_t iov = {(uint8_t *)buf, cap - 1};
    e = __wasi_fd_read(fd, &iov, 1, &n);
    buf[e == 0 ? n : 0] = 0;
    (void)__wasi_fd_close(fd);
    return e;
}

/* Finish: flush stdio and exit with `code` when every self-check passed, 1 otherwise. */
static inline int finish(int code) {
    printf("failures: %d\n", failures);
    fflush(stdout);
    return failures ? 1 : code;
}

#endif
