/*
 * The path_* functions inside the preopened directory, with their error cases:
 * path_create_directory, path_filestat_get (following symlinks or not), path_filestat_set_times,
 * path_link, path_open with every oflag and fdflag, path_readlink, path_remove_directory, path_rename,
 * path_symlink, path_unlink_file.
 * Leaves: kept.txt, hard.txt (a link to kept.txt), moved/ (with inner.txt), link-to-kept -> kept.txt,
 * dangling -> nowhere, appended.txt, excl.txt, renamed.txt.
 */
#include "wasi_check.h"

static void stat_path(const char *path, __wasi_lookupflags_t flags) {
    __wasi_filestat_t st;
    memset(&st, 0, sizeof st);
    __wasi_errno_t e = __wasi_path_filestat_get(PREOPEN, flags, path, &st);
    printf("path_filestat_get %s%s -> %s", path, flags ? " (follow)" : "", errname(e));
    if (e == 0) {
        printf(" type=%s", filetype_name(st.filetype));
        /* Sizes and link counts of directories and symlinks are file-system facts. */
        if (st.filetype == __WASI_FILETYPE_REGULAR_FILE)
            printf(" size=%llu nlink=%llu", (unsigned long long)st.size, (unsigned long long)st.nlink);
    }
    printf("\n");
}

static void open_show(const char *label, const char *path, __wasi_oflags_t oflags, __wasi_fdflags_t fdflags) {
    __wasi_fd_t fd;
    __wasi_errno_t e = open_at(PREOPEN, path, oflags, fdflags, &fd);
    printf("path_open %s %s -> %s\n", path, label, errname(e));
    if (e == 0) (void)__wasi_fd_close(fd);
}

static void create_and_stat(void) {
    puts("== path_create_directory, path_filestat_get");
    SHOW("path_create_directory d", __wasi_path_create_directory(PREOPEN, "d"));
    SHOW("path_create_directory d (exists)", __wasi_path_create_directory(PREOPEN, "d"));
    SHOW("path_create_directory d/e/f (no parent)", __wasi_path_create_directory(PREOPEN, "d/e/f"));
    SHOW("path_create_directory d/e/", __wasi_path_create_directory(PREOPEN, "d/e/"));
    SHOW("path_create_directory empty path", __wasi_path_create_directory(PREOPEN, ""));
    make_file("kept.txt", "kept\n");
    SHOW("path_create_directory kept.txt (a file)", __wasi_path_create_directory(PREOPEN, "kept.txt"));
    stat_path("kept.txt", 0);
    stat_path("d", 0);
    stat_path("d/e", 0);
    stat_path("missing", 0);
    stat_path("kept.txt/x", 0);
    stat_path(".", 0);
    stat_path("d/..", 0);
    stat_path("d/./e/.", 0);
}

static void symlinks(void) {
    puts("== path_symlink, path_readlink");
    SHOW("path_symlink link-to-kept -> kept.txt", __wasi_path_symlink("kept.txt", PREOPEN, "link-to-kept"));
    SHOW("path_symlink dangling -> nowhere", __wasi_path_symlink("nowhere", PREOPEN, "dangling"));
    SHOW("path_symlink onto an existing name", __wasi_path_symlink("kept.txt", PREOPEN, "kept.txt"));
    SHOW("path_symlink in a missing dir", __wasi_path_symlink("x", PREOPEN, "missing/link"));
    stat_path("link-to-kept", 0);
    stat_path("link-to-kept", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW);
    stat_path("dangling", 0);
    stat_path("dangling", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW);
    char buf[64];
    __wasi_size_t n = 0;
    memset(buf, 0, sizeof buf);
    __wasi_errno_t e = __wasi_path_readlink(PREOPEN, "link-to-kept", (uint8_t *)buf, sizeof buf, &n);
    printf("path_readlink link-to-kept -> %s n=%u [%.*s]\n", errname(e), (unsigned)n, (int)n, buf);
    memset(buf, 0, sizeof buf);
    e = __wasi_path_readlink(PREOPEN, "link-to-kept", (uint8_t *)buf, 4, &n);
    printf("path_readlink with a 4-byte buffer -> %s n=%u [%.*s]\n", errname(e), (unsigned)n,
           (int)(e == 0 ? n : 0), buf);
    SHOW("path_readlink kept.txt (not a link)", __wasi_path_readlink(PREOPEN, "kept.txt", (uint8_t *)buf, sizeof buf, &n));
    SHOW("path_readlink missing", __wasi_path_readlink(PREOPEN, "missing", (uint8_t *)buf, sizeof buf, &n));
    SHOW("path_readlink d (a directory)", __wasi_path_readlink(PREOPEN, "d", (uint8_t *)buf, sizeof buf, &n));
    char text[32];
    SHOW("read through link-to-kept", read_file("link-to-kept", text, sizeof text));
    printf("content: %s", text);
    __wasi_fd_t fd;
    e = __wasi_path_open(PREOPEN, 0, "link-to-kept", 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    printf("path_open link-to-kept without symlink_follow -> %s\n", errname(e));
    if (e == 0) (void)__wasi_fd_close(fd);
    open_show("(dangling, follow)", "dangling", 0, 0);
}

static void oflags(void) {
    puts("== path_open oflags and fdflags");
    open_show("no flags, missing", "new.txt", 0, 0);
    open_show("creat", "new.txt", __WASI_OFLAGS_CREAT, 0);
    open_show("creat|excl (exists)", "new.txt", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, 0);
    open_show("creat|excl", "excl.txt", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, 0);
    open_show("excl without creat (exists)", "excl.txt", __WASI_OFLAGS_EXCL, 0);
    open_show("directory", "d", __WASI_OFLAGS_DIRECTORY, 0);
    open_show("directory (a file)", "kept.txt", __WASI_OFLAGS_DIRECTORY, 0);
    open_show("creat|directory", "newdir", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_DIRECTORY, 0);
    open_show("trunc of a directory", "d", __WASI_OFLAGS_TRUNC, 0);
    open_show("creat of a directory", "d", __WASI_OFLAGS_CREAT, 0);
    open_show("in a missing directory", "missing/x", __WASI_OFLAGS_CREAT, 0);
    open_show("trailing slash on a file", "kept.txt/", 0, 0);
    open_show("creat|excl on a dangling symlink", "dangling", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, 0);
    stat_path("newdir", 0);

    make_file("trunc.txt", "0123456789");
    open_show("trunc", "trunc.txt", __WASI_OFLAGS_TRUNC, 0);
    stat_path("trunc.txt", 0);
    SHOW("path_unlink_file trunc.txt", __wasi_path_unlink_file(PREOPEN, "trunc.txt"));
    SHOW("path_unlink_file new.txt", __wasi_path_unlink_file(PREOPEN, "new.txt"));

    make_file("appended.txt", "start;");
    __wasi_fd_t fd;
    __wasi_size_t n;
    SHOW("path_open appended.txt append", open_at(PREOPEN, "appended.txt", 0, __WASI_FDFLAGS_APPEND, &fd));
    SHOW("fd_write", write_str(fd, "more;", &n));
    (void)__wasi_fd_close(fd);
    const __wasi_fdflags_t each[] = {__WASI_FDFLAGS_DSYNC, __WASI_FDFLAGS_NONBLOCK, __WASI_FDFLAGS_RSYNC,
                                     __WASI_FDFLAGS_SYNC};
    const char *names[] = {"dsync", "nonblock", "rsync", "sync"};
    for (int i = 0; i < 4; i++) {
        __wasi_errno_t e = open_at(PREOPEN, "appended.txt", 0, each[i], &fd);
        printf("path_open appended.txt %s -> %s\n", names[i], errname(e));
        if (e == 0) {
            __wasi_fdstat_t st;
            (void)__wasi_fd_fdstat_get(fd, &st);
            printf("  flags=0x%x\n", (unsigned)st.fs_flags);
            (void)__wasi_fd_close(fd);
        }
    }
    char text[64];
    SHOW("read appended.txt", read_file("appended.txt", text, sizeof text));
    printf("content: %s\n", text);
}

static void set_times(void) {
    puts("== path_filestat_set_times");
    const __wasi_timestamp_t T = 1234567890ull * 1000000000ull + 42;
    SHOW("path_filestat_set_times kept.txt atim+mtim",
         __wasi_path_filestat_set_times(PREOPEN, 0, "kept.txt", T, T, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    __wasi_filestat_t st;
    (void)__wasi_path_filestat_get(PREOPEN, 0, "kept.txt", &st);
    check(st.atim == T && st.mtim == T, "times read back exactly");
    SHOW("path_filestat_set_times through link-to-kept (follow)",
         __wasi_path_filestat_set_times(PREOPEN, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "link-to-kept", 0, T + 1,
                                        __WASI_FSTFLAGS_MTIM));
    (void)__wasi_path_filestat_get(PREOPEN, 0, "kept.txt", &st);
    check(st.mtim == T + 1, "following the link changed the target");
    SHOW("path_filestat_set_times d mtim_now",
         __wasi_path_filestat_set_times(PREOPEN, 0, "d", 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("path_filestat_set_times atim|atim_now",
         __wasi_path_filestat_set_times(PREOPEN, 0, "kept.txt", T, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    SHOW("path_filestat_set_times missing",
         __wasi_path_filestat_set_times(PREOPEN, 0, "missing", T, T, __WASI_FSTFLAGS_ATIM));
}

static void links(void) {
    puts("== path_link");
    SHOW("path_link kept.txt -> hard.txt", __wasi_path_link(PREOPEN, 0, "kept.txt", PREOPEN, "hard.txt"));
    stat_path("kept.txt", 0);
    stat_path("hard.txt", 0);
    SHOW("path_link onto an existing name", __wasi_path_link(PREOPEN, 0, "kept.txt", PREOPEN, "hard.txt"));
    SHOW("path_link from a missing file", __wasi_path_link(PREOPEN, 0, "missing", PREOPEN, "x"));
    SHOW("path_link of a directory", __wasi_path_link(PREOPEN, 0, "d", PREOPEN, "d2"));
    SHOW("path_link into a missing dir", __wasi_path_link(PREOPEN, 0, "kept.txt", PREOPEN, "missing/x"));
}

static void rename_remove(void) {
    puts("== path_rename");
    make_file("d/inner.txt", "inner\n");
    make_file("r1.txt", "one\n");
    make_file("r2.txt", "two\n");
    SHOW("path_rename r1.txt -> renamed.txt", __wasi_path_rename(PREOPEN, "r1.txt", PREOPEN, "renamed.txt"));
    SHOW("path_rename r2.txt -> renamed.txt (replaces)", __wasi_path_rename(PREOPEN, "r2.txt", PREOPEN, "renamed.txt"));
    char text[32];
    (void)read_file("renamed.txt", text, sizeof text);
    printf("renamed.txt: %s", text);
    SHOW("path_rename missing", __wasi_path_rename(PREOPEN, "missing", PREOPEN, "x"));
    SHOW("path_rename d -> moved", __wasi_path_rename(PREOPEN, "d", PREOPEN, "moved"));
    stat_path("moved/inner.txt", 0);
    SHOW("path_create_directory full", __wasi_path_create_directory(PREOPEN, "full"));
    make_file("full/x", "x");
    SHOW("path_create_directory empty", __wasi_path_create_directory(PREOPEN, "empty"));
    SHOW("path_rename empty -> full (not empty)", __wasi_path_rename(PREOPEN, "empty", PREOPEN, "full"));
    SHOW("path_rename renamed.txt -> moved (a dir)", __wasi_path_rename(PREOPEN, "renamed.txt", PREOPEN, "moved"));
    SHOW("path_rename moved -> renamed.txt (a file)", __wasi_path_rename(PREOPEN, "moved", PREOPEN, "renamed.txt"));
    SHOW("path_rename moved -> moved/sub (into itself)", __wasi_path_rename(PREOPEN, "moved", PREOPEN, "moved/sub"));
    SHOW("path_rename into a missing dir", __wasi_path_rename(PREOPEN, "renamed.txt", PREOPEN, "missing/x"));

    puts("== path_unlink_file, path_remove_directory");
    SHOW("path_unlink_file missing", __wasi_path_unlink_file(PREOPEN, "missing"));
    SHOW("path_unlink_file moved (a dir)", __wasi_path_unlink_file(PREOPEN, "moved"));
    SHOW("path_unlink_file kept.txt/ (trailing slash)", __wasi_path_unlink_file(PREOPEN, "kept.txt/"));
    SHOW("path_remove_directory full (not empty)", __wasi_path_remove_directory(PREOPEN, "full"));
    SHOW("path_remove_directory kept.txt (a file)", __wasi_path_remove_directory(PREOPEN, "kept.txt"));
    SHOW("path_remove_directory missing", __wasi_path_remove_directory(PREOPEN, "missing"));
    SHOW("path_remove_directory .", __wasi_path_remove_directory(PREOPEN, "."));
    SHOW("path_unlink_file full/x", __wasi_path_unlink_file(PREOPEN, "full/x"));
    SHOW("path_remove_directory full", __wasi_path_remove_directory(PREOPEN, "full"));
    SHOW("path_remove_directory empty/", __wasi_path_remove_directory(PREOPEN, "empty/"));
    SHOW("path_remove_directory newdir", __wasi_path_remove_directory(PREOPEN, "newdir"));
    SHOW("path_remove_directory d/e (moved away)", __wasi_path_remove_directory(PREOPEN, "d/e"));
    SHOW("path_remove_directory moved/e", __wasi_path_remove_directory(PREOPEN, "moved/e"));
    /* Unlinking a symlink removes the link, not its target. */
    SHOW("path_symlink tmp-link -> kept.txt", __wasi_path_symlink("kept.txt", PREOPEN, "tmp-link"));
    SHOW("path_unlink_file tmp-link", __wasi_path_unlink_file(PREOPEN, "tmp-link"));
    stat_path("kept.txt", 0);
    SHOW("path_unlink_file excl.txt", __wasi_path_unlink_file(PREOPEN, "excl.txt"));
    open_show("creat", "excl.txt", __WASI_OFLAGS_CREAT, 0);
}

static void on_a_file_fd(void) {
    puts("== path_* with a file descriptor as the base");
    __wasi_fd_t fd;
    (void)open_at(PREOPEN, "kept.txt", 0, 0, &fd);
    __wasi_filestat_t st;
    __wasi_fd_t out;
    SHOW("path_open", __wasi_path_open(fd, 0, "x", 0, 0, 0, 0, &out));
    SHOW("path_create_directory", __wasi_path_create_directory(fd, "x"));
    SHOW("path_filestat_get", __wasi_path_filestat_get(fd, 0, "x", &st));
    SHOW("path_unlink_file", __wasi_path_unlink_file(fd, "x"));
    (void)__wasi_fd_close(fd);
    SHOW("path_open on a closed fd", __wasi_path_open(fd, 0, "x", 0, 0, 0, 0, &out));
    SHOW("path_create_directory on stdin", __wasi_path_create_directory(0, "x"));
}

int main(void) {
    create_and_stat();
    symlinks();
    oflags();
    set_times();
    links();
    rename_remove();
    on_a_file_fd();
    return finish(0);
}
