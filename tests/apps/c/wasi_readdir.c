/*
 * fd_readdir: entries and their types, the cookie protocol (resuming after any entry gives exactly the
 * entries after it), buffers too small for one entry (the entry is truncated and the reader retries with
 * a larger buffer), and errors. Directory order is the file system's, so names are printed sorted.
 * Leaves dir/ with files a..e, subdir sub/ and symlink link -> a.
 */
#include "wasi_check.h"

#define MAX_ENTRIES 32

typedef struct {
    char name[64];
    __wasi_filetype_t type;
    __wasi_dircookie_t next;
} entry_t;

/* Read the whole directory from `cookie` with a buffer of `bufsize` bytes. */
static int list(__wasi_fd_t dir, __wasi_dircookie_t cookie, size_t bufsize, entry_t *out, __wasi_errno_t *err) {
    static uint8_t buf[4096];
    int count = 0;
    for (;;) {
        __wasi_size_t used = 0;
        *err = __wasi_fd_readdir(dir, buf, bufsize, cookie, &used);
        if (*err != 0) return count;
        size_t pos = 0;
        int progressed = 0;
        while (pos + sizeof(__wasi_dirent_t) <= used) {
            __wasi_dirent_t d;
            memcpy(&d, buf + pos, sizeof d);
            if (pos + sizeof d + d.d_namlen > used) break; /* name truncated: read again from cookie */
            if (count < MAX_ENTRIES && d.d_namlen < sizeof out[0].name) {
                memcpy(out[count].name, buf + pos + sizeof d, d.d_namlen);
                out[count].name[d.d_namlen] = 0;
                out[count].type = d.d_type;
                out[count].next = d.d_next;
                count++;
            }
            cookie = d.d_next;
            pos += sizeof d + d.d_namlen;
            progressed = 1;
        }
        if (used < bufsize && pos == used) return count; /* a short buffer means the end */
        if (!progressed) {
            if (bufsize >= sizeof buf) return count;
            bufsize *= 2; /* not even one entry fitted */
        }
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name);
}

static void print_sorted(const char *label, entry_t *e, int n) {
    entry_t copy[MAX_ENTRIES];
    memcpy(copy, e, sizeof(entry_t) * (size_t)n);
    qsort(copy, (size_t)n, sizeof copy[0], by_name);
    printf("%s (%d):", label, n);
    for (int i = 0; i < n; i++) printf(" %s:%s", copy[i].name, filetype_name(copy[i].type));
    printf("\n");
}

int main(void) {
    __wasi_fd_t dir;
    SHOW("path_create_directory dir", __wasi_path_create_directory(PREOPEN, "dir"));
    const char *names[] = {"a", "b", "c", "d", "e-with-a-longer-name.txt"};
    for (int i = 0; i < 5; i++) {
        char path[64];
        snprintf(path, sizeof path, "dir/%s", names[i]);
        make_file(path, names[i]);
    }
    SHOW("path_create_directory dir/sub", __wasi_path_create_directory(PREOPEN, "dir/sub"));
    SHOW("path_symlink dir/link -> a", __wasi_path_symlink("a", PREOPEN, "dir/link"));
    SHOW("path_open dir", open_at(PREOPEN, "dir", __WASI_OFLAGS_DIRECTORY, 0, &dir));

    entry_t all[MAX_ENTRIES];
    __wasi_errno_t err;
    int n = list(dir, 0, 4096, all, &err);
    printf("fd_readdir -> %s\n", errname(err));
    print_sorted("entries", all, n);

    /* Resume after each entry: the rest of the listing must follow, in the same order. */
    int resumes_ok = 1;
    for (int i = 0; i < n; i++) {
        entry_t rest[MAX_ENTRIES];
        int m = list(dir, all[i].next, 4096, rest, &err);
        if (err != 0 || m != n - i - 1) resumes_ok = 0;
        for (int j = 0; j < m && resumes_ok; j++) {
            if (strcmp(rest[j].name, all[i + 1 + j].name) != 0) resumes_ok = 0;
        }
    }
    check(resumes_ok, "resuming from every cookie gives the rest of the listing");

    /* Reading past the last entry gives nothing. */
    entry_t none[MAX_ENTRIES];
    int m = list(dir, all[n - 1].next, 4096, none, &err);
    printf("fd_readdir after the last cookie -> %s count=%d\n", errname(err), m);

    /* A buffer smaller than one dirent header: the caller gets a partial entry and retries. */
    entry_t small[MAX_ENTRIES];
    m = list(dir, 0, 8, small, &err);
    printf("fd_readdir with an 8-byte buffer -> %s\n", errname(err));
    print_sorted("entries", small, m);
    __wasi_size_t used = 99;
    uint8_t tiny[1];
    SHOW("fd_readdir buf_len=0", __wasi_fd_readdir(dir, tiny, 0, 0, &used));
    printf("bytes used: %u\n", (unsigned)used);

    /* The preopen itself lists the same way. */
    n = list(PREOPEN, 0, 4096, all, &err);
    printf("fd_readdir preopen -> %s\n", errname(err));
    print_sorted("entries", all, n);

    /* Errors. */
    __wasi_fd_t file;
    SHOW("path_open dir/a", open_at(PREOPEN, "dir/a", 0, 0, &file));
    uint8_t buf[256];
    SHOW("fd_readdir on a file", __wasi_fd_readdir(file, buf, sizeof buf, 0, &used));
    (void)__wasi_fd_close(file);
    SHOW("fd_readdir on stdout", __wasi_fd_readdir(1, buf, sizeof buf, 0, &used));
    SHOW("fd_close dir", __wasi_fd_close(dir));
    SHOW("fd_readdir on a closed fd", __wasi_fd_readdir(dir, buf, sizeof buf, 0, &used));
    return finish(0);
}
