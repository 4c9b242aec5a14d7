/*
 * Confinement: every way out of the preopened directory must fail, with every path_* function.
 * Escapes tried: "..", "a/../../x", absolute paths, symlinks whose target leaves the directory,
 * and a path through a regular file. Prints the errno name for each attempt; none may succeed. Also
 * checks that ".." inside the directory (staying within it) keeps working.
 *
 * The directory must be prepared with two links a guest cannot make itself (WASI runtimes refuse to
 * create a symlink with an absolute target): abs -> /etc and abs-file -> /etc/passwd. The program
 * makes up -> ../.. and loop-a <-> loop-b, and leaves inside/ (with file.txt) and file.txt.
 */
#include "wasi_check.h"

static int escaped;

/* An escape attempt must fail; any SUCCESS is an escape. */
static void attempt(const char *label, __wasi_errno_t e) {
    printf("%s -> %s\n", label, errname(e));
    if (e == 0) {
        printf("ESCAPED: %s\n", label);
        escaped++;
    }
}

static void open_attempt(const char *path, __wasi_lookupflags_t flags, __wasi_oflags_t oflags) {
    char label[160];
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(PREOPEN, flags, path, oflags, RIGHTS_FILE_ALL | RIGHTS_DIR_ALL,
                                        RIGHTS_FILE_ALL | RIGHTS_DIR_ALL, 0, &fd);
    snprintf(label, sizeof label, "path_open %s%s%s", path, flags ? " (follow)" : "",
             oflags & __WASI_OFLAGS_CREAT ? " (creat)" : "");
    attempt(label, e);
    if (e == 0) (void)__wasi_fd_close(fd);
}

static void every_function(const char *path) {
    char label[160];
    __wasi_filestat_t st;
    char buf[64];
    __wasi_size_t n;
    printf("-- %s\n", path);
    open_attempt(path, 0, 0);
    open_attempt(path, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0);
    open_attempt(path, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, __WASI_OFLAGS_CREAT);
    snprintf(label, sizeof label, "path_filestat_get %s (follow)", path);
    attempt(label, __wasi_path_filestat_get(PREOPEN, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, path, &st));
    snprintf(label, sizeof label, "path_filestat_set_times %s (follow)", path);
    attempt(label, __wasi_path_filestat_set_times(PREOPEN, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, path, 0, 0,
                                                  __WASI_FSTFLAGS_MTIM_NOW));
    snprintf(label, sizeof label, "path_create_directory %s/newdir", path);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/newdir", path);
    attempt(label, __wasi_path_create_directory(PREOPEN, sub));
    snprintf(label, sizeof label, "path_readlink %s/x", path);
    snprintf(sub, sizeof sub, "%s/x", path);
    attempt(label, __wasi_path_readlink(PREOPEN, sub, (uint8_t *)buf, sizeof buf, &n));
    snprintf(label, sizeof label, "path_symlink %s/newlink", path);
    snprintf(sub, sizeof sub, "%s/newlink", path);
    attempt(label, __wasi_path_symlink("target", PREOPEN, sub));
    snprintf(label, sizeof label, "path_link file.txt -> %s/newhard", path);
    snprintf(sub, sizeof sub, "%s/newhard", path);
    attempt(label, __wasi_path_link(PREOPEN, 0, "file.txt", PREOPEN, sub));
    snprintf(label, sizeof label, "path_link %s -> stolen (follow)", path);
    attempt(label, __wasi_path_link(PREOPEN, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, path, PREOPEN, "stolen"));
    snprintf(label, sizeof label, "path_rename file.txt -> %s/moved", path);
    snprintf(sub, sizeof sub, "%s/moved", path);
    attempt(label, __wasi_path_rename(PREOPEN, "file.txt", PREOPEN, sub));
    snprintf(label, sizeof label, "path_rename %s/x -> here", path);
    snprintf(sub, sizeof sub, "%s/x", path);
    attempt(label, __wasi_path_rename(PREOPEN, sub, PREOPEN, "here"));
    snprintf(label, sizeof label, "path_unlink_file %s/x", path);
    attempt(label, __wasi_path_unlink_file(PREOPEN, sub));
    snprintf(label, sizeof label, "path_remove_directory %s/x", path);
    attempt(label, __wasi_path_remove_directory(PREOPEN, sub));
}

int main(void) {
    make_file("file.txt", "inside\n");
    SHOW("path_create_directory inside", __wasi_path_create_directory(PREOPEN, "inside"));
    make_file("inside/file.txt", "deeper\n");

    puts("== links the program makes that point out");
    SHOW("path_symlink up -> ../..", __wasi_path_symlink("../..", PREOPEN, "up"));
    attempt("path_symlink abs-made -> /etc", __wasi_path_symlink("/etc", PREOPEN, "abs-made"));
    SHOW("path_symlink loop-a -> loop-b", __wasi_path_symlink("loop-b", PREOPEN, "loop-a"));
    SHOW("path_symlink loop-b -> loop-a", __wasi_path_symlink("loop-a", PREOPEN, "loop-b"));

    puts("== links prepared outside the guest");
    const char *prepared[] = {"abs", "abs-file"};
    for (int i = 0; i < 2; i++) {
        __wasi_filestat_t st;
        __wasi_errno_t e = __wasi_path_filestat_get(PREOPEN, 0, prepared[i], &st);
        printf("path_filestat_get %s -> %s type=%s\n", prepared[i], errname(e),
               e == 0 ? filetype_name(st.filetype) : "-");
        check(e == 0 && st.filetype == __WASI_FILETYPE_SYMBOLIC_LINK, "the prepared link is there");
    }

    puts("== escapes");
    const char *paths[] = {
        "..",          "../",          "../etc/passwd",     "inside/../..",  "inside/../../etc",
        "./../x",      "/",            "/etc/passwd",       "/sandbox/file.txt",
        "up",          "up/etc/passwd", "abs",              "abs/passwd",    "abs-file",
        "inside/../up", "file.txt/x",  "file.txt/..",       "loop-a",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) every_function(paths[i]);

    puts("== staying inside still works");
    char text[32];
    SHOW("read inside/../file.txt", read_file("inside/../file.txt", text, sizeof text));
    printf("content: %s", text);
    SHOW("read ./inside/./file.txt", read_file("./inside/./file.txt", text, sizeof text));
    printf("content: %s", text);
    __wasi_filestat_t st;
    SHOW("path_filestat_get inside/.. (follow)",
         __wasi_path_filestat_get(PREOPEN, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "inside/..", &st));
    char buf[64];
    __wasi_size_t n = 0;
    memset(buf, 0, sizeof buf);
    __wasi_errno_t e = __wasi_path_readlink(PREOPEN, "abs", (uint8_t *)buf, sizeof buf, &n);
    printf("path_readlink abs -> %s [%.*s]\n", errname(e), (int)(e == 0 ? n : 0), buf);

    /* Opening a subdirectory gives a descriptor that is confined to it as well. */
    __wasi_fd_t inside;
    SHOW("path_open inside", open_at(PREOPEN, "inside", __WASI_OFLAGS_DIRECTORY, 0, &inside));
    __wasi_fd_t fd;
    e = __wasi_path_open(inside, 0, "../file.txt", 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    attempt("path_open ../file.txt from inside/", e);
    e = __wasi_path_open(inside, 0, "file.txt", 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    printf("path_open file.txt from inside/ -> %s\n", errname(e));

    printf("escapes: %d\n", escaped);
    if (escaped) failures++;
    return finish(0);
}
