/*
 * fd_fdstat_set_rights: rights can be dropped, never regained; a dropped right then refuses the
 * operation it guards; and path_open with every defined right.
 *
 * Kept apart from the other programs because runtimes differ here: wasmtime's preview 1 no longer
 * tracks rights (fd_fdstat_set_rights answers ENOTSUP), while a runtime that follows witx's rights
 * model answers SUCCESS and then refuses the dropped operations.
 */
#include "wasi_check.h"

static void show(__wasi_fd_t fd, const char *label) {
    __wasi_fdstat_t st;
    memset(&st, 0, sizeof st);
    __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
    printf("fd_fdstat_get %s -> %s read=%d write=%d seek=%d tell=%d\n", label, errname(e),
           !!(st.fs_rights_base & __WASI_RIGHTS_FD_READ), !!(st.fs_rights_base & __WASI_RIGHTS_FD_WRITE),
           !!(st.fs_rights_base & __WASI_RIGHTS_FD_SEEK), !!(st.fs_rights_base & __WASI_RIGHTS_FD_TELL));
}

int main(void) {
    make_file("rights.txt", "0123456789");
    __wasi_fd_t fd;
    SHOW("path_open rights.txt", open_at(PREOPEN, "rights.txt", 0, 0, &fd));
    show(fd, "as opened");
    SHOW("fd_fdstat_set_rights drop write",
         __wasi_fd_fdstat_set_rights(fd, RIGHTS_FILE_ALL & ~__WASI_RIGHTS_FD_WRITE, 0));
    show(fd, "after dropping write");
    __wasi_size_t n;
    SHOW("fd_write", write_str(fd, "x", &n));
    SHOW("fd_fdstat_set_rights regain write", __wasi_fd_fdstat_set_rights(fd, RIGHTS_FILE_ALL, 0));
    show(fd, "after trying to regain write");
    SHOW("fd_fdstat_set_rights drop tell",
         __wasi_fd_fdstat_set_rights(fd, RIGHTS_FILE_ALL & ~(__WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_TELL), 0));
    __wasi_filesize_t pos;
    SHOW("fd_tell", __wasi_fd_tell(fd, &pos));
    SHOW("fd_fdstat_set_rights on a closed fd", __wasi_fd_fdstat_set_rights(77, 0, 0));
    (void)__wasi_fd_close(fd);
    /* witx `rights` defines bits 0..29 (fd_datasync .. sock_accept). */
    const __wasi_rights_t every = ((__wasi_rights_t)1 << 30) - 1;
    SHOW("path_open with every right", __wasi_path_open(PREOPEN, 0, "rights.txt", 0, every, every, 0, &fd));
    show(fd, "every right requested");
    (void)__wasi_fd_close(fd);
    char text[32];
    SHOW("read rights.txt", read_file("rights.txt", text, sizeof text));
    printf("content: %s\n", text);
    return finish(0);
}
