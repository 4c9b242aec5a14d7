/*
 * An echo server on the listener the manifest preopens (fd 3, with no mounts): accept(3, ...), send
 * the greeting "secret:" + $SECRET + "\n", echo every byte received until the peer ends its side,
 * then shutdown(SHUT_WR) and close. argv[1]: how many connections to serve (default 1).
 * "errno" as argv[1] instead prints the errno of calls that must fail, then serves one connection
 * without blocking calls (poll_oneoff on the listener and the connection).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wasi/api.h>

#define LISTENER 3

static void say(const char *what, int err) { printf("%s -> %d\n", what, err); fflush(stdout); }

static int serve(int conn) {
    const char *secret = getenv("SECRET");
    char greeting[256];
    int n = snprintf(greeting, sizeof greeting, "secret:%s\n", secret ? secret : "");
    if (send(conn, greeting, (size_t)n, 0) != n) return 1;
    char buf[4096];
    for (;;) {
        ssize_t got = recv(conn, buf, sizeof buf, 0);
        if (got < 0) { perror("recv"); return 1; }
        if (got == 0) break;
        for (ssize_t at = 0; at < got;) {
            ssize_t sent = send(conn, buf + at, (size_t)(got - at), 0);
            if (sent <= 0) { perror("send"); return 1; }
            at += sent;
        }
    }
    if (shutdown(conn, SHUT_WR) != 0) { perror("shutdown"); return 1; }
    return close(conn) != 0;
}

static int errno_cases(void) {
    __wasi_fd_t fd;
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n;
    __wasi_roflags_t ro;
    __wasi_fdstat_t st;
    say("fdstat listener", __wasi_fd_fdstat_get(LISTENER, &st));
    printf("listener filetype %d\n", st.fs_filetype);
    say("prestat listener", __wasi_fd_prestat_get(LISTENER, &(__wasi_prestat_t){0}));
    say("accept stdout", __wasi_sock_accept(1, 0, &fd));
    say("accept closed", __wasi_sock_accept(77, 0, &fd));
    say("recv listener", __wasi_sock_recv(LISTENER, &iov, 1, 0, &n, &ro));
    say("set nonblock", __wasi_fd_fdstat_set_flags(LISTENER, __WASI_FDFLAGS_NONBLOCK));
    say("accept nonblocking", __wasi_sock_accept(LISTENER, 0, &fd));
    printf("ready\n");
    fflush(stdout);
    __wasi_subscription_t sub = {.userdata = 7, .u = {.tag = __WASI_EVENTTYPE_FD_READ}};
    sub.u.u.fd_read.file_descriptor = LISTENER;
    __wasi_event_t ev;
    say("poll listener", __wasi_poll_oneoff(&sub, &ev, 1, &n));
    printf("event %llu type %d\n", (unsigned long long)ev.userdata, ev.type);
    say("accept", __wasi_sock_accept(LISTENER, __WASI_FDFLAGS_NONBLOCK, &fd));
    say("shutdown none", __wasi_sock_shutdown(fd, 0));
    say("recv nonblocking", __wasi_sock_recv(fd, &iov, 1, 0, &n, &ro));
    sub.u.u.fd_read.file_descriptor = fd;
    say("poll conn", __wasi_poll_oneoff(&sub, &ev, 1, &n));
    printf("nbytes %llu\n", (unsigned long long)ev.fd_readwrite.nbytes);
    say("recv peek", __wasi_sock_recv(fd, &iov, 1, __WASI_RIFLAGS_RECV_PEEK, &n, &ro));
    printf("peeked %.*s\n", (int)n, buf);
    say("recv", __wasi_sock_recv(fd, &iov, 1, 0, &n, &ro));
    printf("got %.*s\n", (int)n, buf);
    __wasi_ciovec_t ciov = {(const uint8_t *)buf, n};
    say("send", __wasi_sock_send(fd, &ciov, 1, 0, &n));
    say("shutdown wr", __wasi_sock_shutdown(fd, __WASI_SDFLAGS_WR));
    say("send after shutdown", __wasi_sock_send(fd, &ciov, 1, 0, &n));
    say("shutdown rd", __wasi_sock_shutdown(fd, __WASI_SDFLAGS_RD));
    say("recv after shutdown", __wasi_sock_recv(fd, &iov, 1, 0, &n, &ro));
    printf("count %u\n", (unsigned)n);
    say("close", __wasi_fd_close(fd));
    say("recv closed", __wasi_sock_recv(fd, &iov, 1, 0, &n, &ro));
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "errno") == 0) return errno_cases();
    int count = argc > 1 ? atoi(argv[1]) : 1;
    for (int i = 0; i < count; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int conn = accept(LISTENER, (struct sockaddr *)&addr, &len);
        if (conn < 0) { perror("accept"); return 1; }
        if (serve(conn)) return 1;
    }
    printf("served %d\n", count);
    return 0;
}
