/*
 * sock_accept, sock_recv, sock_send, sock_shutdown on descriptors that are not sockets (a file, the
 * preopened directory, stdio) and on one that is not open. Preopened listeners are a manifest feature
 * of the runtime under test, so the success path is exercised by its own tests, not here.
 */
#include "wasi_check.h"

static void on(const char *what, __wasi_fd_t fd) {
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    __wasi_size_t n;
    __wasi_roflags_t roflags;
    __wasi_fd_t accepted;
    printf("sock_accept %s -> %s\n", what, errname(__wasi_sock_accept(fd, 0, &accepted)));
    printf("sock_recv %s -> %s\n", what, errname(__wasi_sock_recv(fd, &iov, 1, 0, &n, &roflags)));
    printf("sock_send %s -> %s\n", what, errname(__wasi_sock_send(fd, &ciov, 1, 0, &n)));
    printf("sock_shutdown %s -> %s\n", what,
           errname(__wasi_sock_shutdown(fd, __WASI_SDFLAGS_RD | __WASI_SDFLAGS_WR)));
}

int main(void) {
    make_file("sock.txt", "not a socket\n");
    __wasi_fd_t fd;
    SHOW("path_open sock.txt", open_at(PREOPEN, "sock.txt", 0, 0, &fd));
    on("a file", fd);
    on("the preopen", PREOPEN);
    on("stdin", 0);
    on("stdout", 1);
    (void)__wasi_fd_close(fd);
    on("a closed fd", fd);
    char text[32];
    SHOW("read sock.txt", read_file("sock.txt", text, sizeof text));
    check(strcmp(text, "not a socket\n") == 0, "the file is untouched");
    return finish(0);
}
