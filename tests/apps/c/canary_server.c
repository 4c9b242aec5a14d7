/*
 * The canary: a secret that exists only inside the enclave, and two ways out of it that the host carries.
 *
 * The secret is 48 bytes from random_get (getentropy), hex-encoded, so it is in neither the bundle nor the
 * manifest: whoever wants to look for it must learn it from the one party it is sent to. The program
 * writes it (and a newline) to "secret.txt" in the first preopened directory (the encrypted mount), fsyncs
 * and closes it, then accepts one connection on the first preopened listener (the first descriptor whose
 * type is SOCKET_STREAM: the manifest's directories come first), sends it the same line, ends its side
 * (shutdown SHUT_WR), reads until the peer ends its own, and exits 0. Any failure exits 1 with perror's
 * line. Nothing of the secret goes to stdout or stderr: the console is the host's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wasi/api.h>

#define SECRET_BYTES 48
#define FIRST_PREOPEN 3
#define MAX_FD 64

static int fail(const char *what) { perror(what); return 1; }

/* The first descriptor of the given WASI file type, from the first preopen on; -1 if none. */
static int first_of_type(__wasi_filetype_t type) {
    for (int fd = FIRST_PREOPEN; fd < MAX_FD; fd++) {
        __wasi_fdstat_t st;
        if (__wasi_fd_fdstat_get((__wasi_fd_t)fd, &st) == 0 && st.fs_filetype == type) return fd;
    }
    return -1;
}

static int write_all(int fd, const char *data, size_t len, int is_socket) {
    for (size_t at = 0; at < len;) {
        ssize_t n = is_socket ? send(fd, data + at, len - at, 0) : write(fd, data + at, len - at);
        if (n <= 0) return -1;
        at += (size_t)n;
    }
    return 0;
}

int main(void) {
    unsigned char raw[SECRET_BYTES];
    if (getentropy(raw, sizeof raw) != 0) return fail("getentropy");
    char line[2 * SECRET_BYTES + 2];
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < SECRET_BYTES; i++) {
        line[2 * i] = hex[raw[i] >> 4];
        line[2 * i + 1] = hex[raw[i] & 15];
    }
    line[2 * SECRET_BYTES] = '\n';
    size_t len = 2 * SECRET_BYTES + 1;

    int dir = first_of_type(__WASI_FILETYPE_DIRECTORY);
    if (dir < 0) { fputs("no preopened directory\n", stderr); return 1; }
    int file = openat(dir, "secret.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (file < 0) return fail("open secret.txt");
    if (write_all(file, line, len, 0) != 0) return fail("write secret.txt");
    if (fsync(file) != 0) return fail("fsync secret.txt");
    if (close(file) != 0) return fail("close secret.txt");

    int listener = first_of_type(__WASI_FILETYPE_SOCKET_STREAM);
    if (listener < 0) { fputs("no preopened listener\n", stderr); return 1; }
    int conn = accept(listener, NULL, NULL);
    if (conn < 0) return fail("accept");
    if (write_all(conn, line, len, 1) != 0) return fail("send");
    if (shutdown(conn, SHUT_WR) != 0) return fail("shutdown");
    char buf[256];
    for (;;) {  /* until the peer's end: closing with its bytes unread would reset the connection */
        ssize_t got = recv(conn, buf, sizeof buf, 0);
        if (got < 0) return fail("recv");
        if (got == 0) break;
    }
    if (close(conn) != 0) return fail("close");
    puts("canary served");
    return 0;
}
