/*
 * The fd_* functions on regular files and the preopened directory:
 * fd_write, fd_read, fd_seek, fd_tell, fd_pread, fd_pwrite, fd_advise, fd_allocate, fd_datasync,
 * fd_sync, fd_fdstat_get, fd_fdstat_set_flags, fd_filestat_get, fd_filestat_set_size,
 * fd_filestat_set_times, fd_prestat_get, fd_prestat_dir_name, fd_renumber, fd_close,
 * and the error each one gives on a descriptor that is not open or not of the right kind.
 * Leaves data.bin, other.txt and renumbered.txt in the directory.
 */
#include "wasi_check.h"

#define BADFD 77

/*
 * Scatter/gather I/O over two buffers (a bytes, then b bytes) of one contiguous area, repeated until
 * everything is transferred or a read hits end of file. A runtime may transfer less than asked in one
 * call (wasmtime only uses the first non-empty buffer), so only the totals are printed.
 * `offset` < 0 means fd_read/fd_write at the current position, otherwise fd_pread/fd_pwrite there.
 */
static __wasi_errno_t transfer(int writing, __wasi_fd_t fd, char *area, size_t a, size_t b,
                               long long offset, size_t *total) {
    *total = 0;
    while (*total < a + b) {
        size_t done = *total;
        __wasi_iovec_t iov[2];
        size_t cnt = 0;
        if (done < a) iov[cnt++] = (__wasi_iovec_t){(uint8_t *)area + done, a - done};
        size_t boff = done > a ? done - a : 0;
        if (b > boff) iov[cnt++] = (__wasi_iovec_t){(uint8_t *)area + a + boff, b - boff};
        __wasi_size_t n = 0;
        __wasi_errno_t e;
        if (writing && offset < 0)
            e = __wasi_fd_write(fd, (const __wasi_ciovec_t *)iov, cnt, &n);
        else if (writing)
            e = __wasi_fd_pwrite(fd, (const __wasi_ciovec_t *)iov, cnt, offset + done, &n);
        else if (offset < 0)
            e = __wasi_fd_read(fd, iov, cnt, &n);
        else
            e = __wasi_fd_pread(fd, iov, cnt, offset + done, &n);
        if (e != 0) return e;
        if (n == 0) break;
        *total += n;
    }
    return 0;
}

static void write2(__wasi_fd_t fd, const char *a, const char *b) {
    char area[64];
    size_t la = strlen(a), lb = strlen(b), total;
    memcpy(area, a, la);
    memcpy(area + la, b, lb);
    __wasi_errno_t e = transfer(1, fd, area, la, lb, -1, &total);
    printf("fd_write %zu+%zu -> %s total=%zu\n", la, lb, errname(e), total);
}

static void pwrite_show(__wasi_fd_t fd, const char *text, long long off) {
    char area[64];
    size_t len = strlen(text), total;
    memcpy(area, text, len);
    __wasi_errno_t e = transfer(1, fd, area, len, 0, off, &total);
    printf("fd_pwrite %s off=%lld -> %s total=%zu\n", text, off, errname(e), total);
}

static void show_bytes(const char *area, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) putchar(area[i] ? area[i] : '.');
    puts("]");
}

static void read_show(__wasi_fd_t fd, size_t a, size_t b) {
    char area[128] = {0};
    size_t total;
    __wasi_errno_t e = transfer(0, fd, area, a, b, -1, &total);
    printf("fd_read %zu+%zu -> %s total=%zu ", a, b, errname(e), total);
    show_bytes(area, total);
}

static void pread_show(__wasi_fd_t fd, size_t len, long long off) {
    char area[128] = {0};
    size_t total;
    __wasi_errno_t e = transfer(0, fd, area, len / 2, len - len / 2, off, &total);
    printf("fd_pread len=%zu off=%lld -> %s total=%zu ", len, off, errname(e), total);
    show_bytes(area, total);
}

static void seek_show(__wasi_fd_t fd, __wasi_filedelta_t off, __wasi_whence_t whence) {
    __wasi_filesize_t pos = 0;
    __wasi_errno_t e = __wasi_fd_seek(fd, off, whence, &pos);
    printf("fd_seek off=%lld whence=%u -> %s", (long long)off, (unsigned)whence, errname(e));
    if (e == 0) printf(" pos=%llu", (unsigned long long)pos);
    printf("\n");
}

static void tell_show(__wasi_fd_t fd) {
    __wasi_filesize_t pos = 0;
    __wasi_errno_t e = __wasi_fd_tell(fd, &pos);
    printf("fd_tell -> %s pos=%llu\n", errname(e), (unsigned long long)pos);
}

static __wasi_filestat_t stat_show(__wasi_fd_t fd) {
    __wasi_filestat_t st;
    memset(&st, 0, sizeof st);
    __wasi_errno_t e = __wasi_fd_filestat_get(fd, &st);
    printf("fd_filestat_get -> %s type=%s size=%llu nlink=%llu\n", errname(e),
           filetype_name(st.filetype), (unsigned long long)st.size, (unsigned long long)st.nlink);
    return st;
}

static void fdstat_show(__wasi_fd_t fd, const char *label) {
    __wasi_fdstat_t st;
    memset(&st, 0, sizeof st);
    __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
    printf("fd_fdstat_get %s -> %s type=%s flags=0x%x read=%d write=%d seek=%d\n", label, errname(e),
           filetype_name(st.fs_filetype), (unsigned)st.fs_flags,
           !!(st.fs_rights_base & __WASI_RIGHTS_FD_READ), !!(st.fs_rights_base & __WASI_RIGHTS_FD_WRITE),
           !!(st.fs_rights_base & __WASI_RIGHTS_FD_SEEK));
}

static void regular_file(void) {
    __wasi_fd_t fd;
    puts("== read, write, seek, tell");
    SHOW("path_open data.bin creat|trunc",
         open_at(PREOPEN, "data.bin", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, 0, &fd));
    write2(fd, "hello ", "world");
    tell_show(fd);
    seek_show(fd, 0, __WASI_WHENCE_SET);
    read_show(fd, 3, 4);
    tell_show(fd);
    read_show(fd, 10, 10);
    read_show(fd, 10, 10); /* at end of file */
    seek_show(fd, -5, __WASI_WHENCE_END);
    read_show(fd, 2, 0);
    seek_show(fd, 1, __WASI_WHENCE_CUR);
    read_show(fd, 5, 5);
    seek_show(fd, -1, __WASI_WHENCE_SET);
    seek_show(fd, -100, __WASI_WHENCE_CUR);
    seek_show(fd, 100, __WASI_WHENCE_SET); /* past the end is allowed */
    tell_show(fd);
    read_show(fd, 4, 0);

    puts("== pread, pwrite (the position does not move)");
    seek_show(fd, 2, __WASI_WHENCE_SET);
    pread_show(fd, 5, 6);
    pread_show(fd, 5, 9);
    pread_show(fd, 5, 11);
    pread_show(fd, 5, 1000);
    tell_show(fd);
    pwrite_show(fd, "WORLD", 6);
    pwrite_show(fd, "WORLD", 14); /* past the end: the gap reads as zeros */
    tell_show(fd);
    pread_show(fd, 30, 0);
    stat_show(fd);

    puts("== filestat set_size");
    SHOW("fd_filestat_set_size 4", __wasi_fd_filestat_set_size(fd, 4));
    stat_show(fd);
    SHOW("fd_filestat_set_size 8", __wasi_fd_filestat_set_size(fd, 8));
    pread_show(fd, 30, 0);

    puts("== filestat set_times");
    const __wasi_timestamp_t T1 = 1600000000ull * 1000000000ull + 123456789ull;
    const __wasi_timestamp_t T2 = 1500000000ull * 1000000000ull;
    SHOW("fd_filestat_set_times atim+mtim",
         __wasi_fd_filestat_set_times(fd, T1, T2, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    __wasi_filestat_t st = stat_show(fd);
    check(st.atim == T1, "atim is exactly what was set");
    check(st.mtim == T2, "mtim is exactly what was set");
    SHOW("fd_filestat_set_times mtim_now", __wasi_fd_filestat_set_times(fd, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    st = stat_show(fd);
    check(st.mtim > T1 && st.atim == T1, "mtim_now moves mtim to now and leaves atim");
    SHOW("fd_filestat_set_times atim|atim_now",
         __wasi_fd_filestat_set_times(fd, T1, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    SHOW("fd_filestat_set_times mtim|mtim_now",
         __wasi_fd_filestat_set_times(fd, 0, T2, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("fd_filestat_set_times none", __wasi_fd_filestat_set_times(fd, 0, 0, 0));

    puts("== advise, allocate, sync");
    for (__wasi_advice_t a = 0; a <= __WASI_ADVICE_NOREUSE; a++) {
        printf("fd_advise advice=%u -> %s\n", (unsigned)a, errname(__wasi_fd_advise(fd, 0, 8, a)));
    }
    SHOW("fd_allocate 0+8", __wasi_fd_allocate(fd, 0, 8));
    SHOW("fd_datasync", __wasi_fd_datasync(fd));
    SHOW("fd_sync", __wasi_fd_sync(fd));

    puts("== fdstat, set_flags");
    fdstat_show(fd, "data.bin");
    SHOW("fd_fdstat_set_flags append", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_APPEND));
    fdstat_show(fd, "data.bin");
    seek_show(fd, 0, __WASI_WHENCE_SET);
    __wasi_size_t n = 0;
    SHOW("fd_write (appends)", write_str(fd, "!", &n));
    tell_show(fd);
    pread_show(fd, 30, 0);
    SHOW("fd_fdstat_set_flags 0", __wasi_fd_fdstat_set_flags(fd, 0));
    fdstat_show(fd, "data.bin");
    SHOW("fd_fdstat_set_flags nonblock", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_NONBLOCK));
    fdstat_show(fd, "data.bin");
    SHOW("fd_fdstat_set_flags 0", __wasi_fd_fdstat_set_flags(fd, 0));

    puts("== close");
    SHOW("fd_close", __wasi_fd_close(fd));
    SHOW("fd_close again", __wasi_fd_close(fd));
    read_show(fd, 1, 0);
}

static void renumber(void) {
    __wasi_fd_t a, b;
    char buf[64];
    puts("== renumber");
    make_file("other.txt", "other\n");
    make_file("renumbered.txt", "renumbered\n");
    SHOW("path_open renumbered.txt", open_at(PREOPEN, "renumbered.txt", 0, 0, &a));
    SHOW("path_open other.txt", open_at(PREOPEN, "other.txt", 0, 0, &b));
    SHOW("fd_renumber a -> b", __wasi_fd_renumber(a, b));
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf - 1};
    __wasi_size_t n = 0;
    SHOW("fd_read b", __wasi_fd_read(b, &iov, 1, &n));
    buf[n] = 0;
    printf("b now reads: %s", buf);
    SHOW("fd_read a (moved away)", __wasi_fd_read(a, &iov, 1, &n));
    SHOW("fd_renumber b -> b", __wasi_fd_renumber(b, b));
    SHOW("fd_renumber b -> not open", __wasi_fd_renumber(b, BADFD));
    SHOW("fd_renumber not open -> b", __wasi_fd_renumber(BADFD, b));
    SHOW("fd_close b", __wasi_fd_close(b));
}

static void prestat(void) {
    puts("== prestat");
    __wasi_prestat_t ps;
    memset(&ps, 0, sizeof ps);
    __wasi_errno_t e = __wasi_fd_prestat_get(PREOPEN, &ps);
    printf("fd_prestat_get 3 -> %s tag=%u len=%u\n", errname(e), (unsigned)ps.tag,
           (unsigned)ps.u.dir.pr_name_len);
    char name[64];
    memset(name, 0, sizeof name);
    e = __wasi_fd_prestat_dir_name(PREOPEN, (uint8_t *)name, ps.u.dir.pr_name_len);
    printf("fd_prestat_dir_name 3 -> %s name=%s\n", errname(e), name);
    memset(name, 0, sizeof name);
    e = __wasi_fd_prestat_dir_name(PREOPEN, (uint8_t *)name, 2);
    printf("fd_prestat_dir_name 3 short buffer -> %s\n", errname(e));
    e = __wasi_fd_prestat_dir_name(PREOPEN, (uint8_t *)name, sizeof name);
    printf("fd_prestat_dir_name 3 long buffer -> %s\n", errname(e));
    SHOW("fd_prestat_get 0 (stdin)", __wasi_fd_prestat_get(0, &ps));
    SHOW("fd_prestat_get 4 (not open)", __wasi_fd_prestat_get(4, &ps));
    SHOW("fd_prestat_dir_name 4", __wasi_fd_prestat_dir_name(4, (uint8_t *)name, sizeof name));
    __wasi_fd_t fd;
    (void)open_at(PREOPEN, "other.txt", 0, 0, &fd);
    SHOW("fd_prestat_get on an opened file", __wasi_fd_prestat_get(fd, &ps));
    (void)__wasi_fd_close(fd);
}

static void directory_fd(void) {
    puts("== fd_* on a directory");
    fdstat_show(PREOPEN, "preopen");
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_fd_filestat_get(PREOPEN, &st);
    /* Size and link count of a directory are file-system facts; only the type is compared. */
    printf("fd_filestat_get preopen -> %s type=%s\n", errname(e), filetype_name(st.filetype));
    char x[8];
    __wasi_iovec_t iov = {(uint8_t *)x, sizeof x};
    __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    __wasi_size_t n;
    __wasi_filesize_t pos;
    SHOW("fd_read dir", __wasi_fd_read(PREOPEN, &iov, 1, &n));
    SHOW("fd_write dir", __wasi_fd_write(PREOPEN, &ciov, 1, &n));
    SHOW("fd_pread dir", __wasi_fd_pread(PREOPEN, &iov, 1, 0, &n));
    SHOW("fd_pwrite dir", __wasi_fd_pwrite(PREOPEN, &ciov, 1, 0, &n));
    SHOW("fd_seek dir", __wasi_fd_seek(PREOPEN, 0, __WASI_WHENCE_SET, &pos));
    SHOW("fd_tell dir", __wasi_fd_tell(PREOPEN, &pos));
    SHOW("fd_filestat_set_size dir", __wasi_fd_filestat_set_size(PREOPEN, 0));
    SHOW("fd_allocate dir", __wasi_fd_allocate(PREOPEN, 0, 1));
    SHOW("fd_advise dir", __wasi_fd_advise(PREOPEN, 0, 1, __WASI_ADVICE_NORMAL));
    SHOW("fd_sync dir", __wasi_fd_sync(PREOPEN));
    SHOW("fd_datasync dir", __wasi_fd_datasync(PREOPEN));
}

static void read_only_file(void) {
    puts("== rights of a read-only descriptor");
    __wasi_fd_t fd;
    SHOW("path_open other.txt read-only",
         __wasi_path_open(PREOPEN, 0, "other.txt", 0, __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_SEEK, 0, 0, &fd));
    fdstat_show(fd, "read-only");
    __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    __wasi_size_t n;
    SHOW("fd_write on read-only", __wasi_fd_write(fd, &ciov, 1, &n));
    SHOW("fd_pwrite on read-only", __wasi_fd_pwrite(fd, &ciov, 1, 0, &n));
    SHOW("fd_filestat_set_size on read-only", __wasi_fd_filestat_set_size(fd, 0));
    read_show(fd, 5, 1);
    SHOW("fd_close", __wasi_fd_close(fd));
    char buf[32];
    SHOW("read other.txt", read_file("other.txt", buf, sizeof buf));
    check(strcmp(buf, "other\n") == 0, "other.txt unchanged");
}

static void bad_descriptors(void) {
    puts("== a descriptor that is not open");
    char x[8];
    __wasi_iovec_t iov = {(uint8_t *)x, sizeof x};
    __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    __wasi_size_t n;
    __wasi_filesize_t pos;
    __wasi_fdstat_t fst;
    __wasi_filestat_t st;
    SHOW("fd_advise", __wasi_fd_advise(BADFD, 0, 0, 0));
    SHOW("fd_allocate", __wasi_fd_allocate(BADFD, 0, 1));
    SHOW("fd_close", __wasi_fd_close(BADFD));
    SHOW("fd_datasync", __wasi_fd_datasync(BADFD));
    SHOW("fd_fdstat_get", __wasi_fd_fdstat_get(BADFD, &fst));
    SHOW("fd_fdstat_set_flags", __wasi_fd_fdstat_set_flags(BADFD, 0));
    SHOW("fd_filestat_get", __wasi_fd_filestat_get(BADFD, &st));
    SHOW("fd_filestat_set_size", __wasi_fd_filestat_set_size(BADFD, 0));
    SHOW("fd_filestat_set_times", __wasi_fd_filestat_set_times(BADFD, 0, 0, 0));
    SHOW("fd_pread", __wasi_fd_pread(BADFD, &iov, 1, 0, &n));
    SHOW("fd_pwrite", __wasi_fd_pwrite(BADFD, &ciov, 1, 0, &n));
    SHOW("fd_read", __wasi_fd_read(BADFD, &iov, 1, &n));
    SHOW("fd_readdir", __wasi_fd_readdir(BADFD, (uint8_t *)x, sizeof x, 0, &n));
    SHOW("fd_seek", __wasi_fd_seek(BADFD, 0, 0, &pos));
    SHOW("fd_sync", __wasi_fd_sync(BADFD));
    SHOW("fd_tell", __wasi_fd_tell(BADFD, &pos));
    SHOW("fd_write", __wasi_fd_write(BADFD, &ciov, 1, &n));
    SHOW("fd_write fd=-1", __wasi_fd_write(-1, &ciov, 1, &n));
    SHOW("fd_read fd=0x7fffffff", __wasi_fd_read(0x7fffffff, &iov, 1, &n));
}

int main(void) {
    regular_file();
    renumber();
    prestat();
    directory_fd();
    read_only_file();
    bad_descriptors();
    return finish(0);
}
