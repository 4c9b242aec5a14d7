/*
 * SQLITE_EXTRA_INIT hook (run at the end of sqlite3_initialize): make the "unix-none" VFS the default.
 *
 * The default "unix" VFS takes POSIX advisory locks with fcntl(F_SETLK), which WASI preview 1 lacks.
 * "unix-none" is the same VFS without locking, correct for one process per database — which is what a
 * WASI preview 1 program is: no threads, no fork.
 */
#include "sqlite3.h"

int haven_wasi_init(const char *unused) {
    (void)unused;
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix-none");
    return vfs ? sqlite3_vfs_register(vfs, 1) : SQLITE_ERROR;
}
