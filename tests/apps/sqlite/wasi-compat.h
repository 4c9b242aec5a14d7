/*
 * Force-included (clang -include) when building SQLite 3.40 for wasm32-wasi.
 *
 * SQLite's os_unix.c names a few POSIX facilities that WASI preview 1 does not have and wasi-libc
 * therefore does not declare. They are declared here so the file compiles unchanged; none of them is
 * reached at run time with the "unix-none" VFS that wasi_init.c makes the default:
 *  - record locks (fcntl F_GETLK/F_SETLK/F_SETLKW and the lock types): WASI preview 1 has no advisory
 *    locks. wasi-libc's <fcntl.h> declares struct flock but keeps these constants behind
 *    __wasilibc_unmodified_upstream; the values are Linux's generic ones. wasi-libc's fcntl() rejects
 *    these commands with EINVAL if anything did issue them.
 *  - fchmod/fchown/geteuid: WASI files have no mode bits or owners, so there is nothing to change; SQLite
 *    only calls them to give a new journal the database file's mode and owner.
 */
#include <fcntl.h>
#include <sys/types.h>

#ifndef F_RDLCK
#define F_RDLCK 0
#define F_WRLCK 1
#define F_UNLCK 2
#endif
#ifndef F_GETLK
#define F_GETLK 5
#define F_SETLK 6
#define F_SETLKW 7
#endif

static inline int fchmod(int fd, mode_t mode) { (void)fd; (void)mode; return 0; }
static inline int fchown(int fd, uid_t uid, gid_t gid) { (void)fd; (void)uid; (void)gid; return 0; }
/* Not root: SQLite then never tries to change a journal's owner. */
static inline uid_t geteuid(void) { return 1; }
