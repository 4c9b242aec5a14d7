/*
 * poll_oneoff with clock subscriptions (relative and absolute, monotonic and realtime), fd_read and
 * fd_write subscriptions on regular files and stdio, a subscription on a descriptor that is not open,
 * and an empty subscription list. Events are printed sorted by userdata; elapsed time only as a relation.
 */
#include "wasi_check.h"

#define MS 1000000ull

static __wasi_subscription_t clock_sub(__wasi_userdata_t ud, __wasi_clockid_t id, __wasi_timestamp_t t, int abs) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = ud;
    s.u.tag = __WASI_EVENTTYPE_CLOCK;
    s.u.u.clock.id = id;
    s.u.u.clock.timeout = t;
    s.u.u.clock.precision = 0;
    s.u.u.clock.flags = abs ? __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME : 0;
    return s;
}

static __wasi_subscription_t fd_sub(__wasi_userdata_t ud, __wasi_eventtype_t type, __wasi_fd_t fd) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = ud;
    s.u.tag = type;
    if (type == __WASI_EVENTTYPE_FD_READ) s.u.u.fd_read.file_descriptor = fd;
    else s.u.u.fd_write.file_descriptor = fd;
    return s;
}

static int by_userdata(const void *a, const void *b) {
    __wasi_userdata_t x = ((const __wasi_event_t *)a)->userdata, y = ((const __wasi_event_t *)b)->userdata;
    return x < y ? -1 : x > y;
}

static const char *type_name(__wasi_eventtype_t t) {
    return t == __WASI_EVENTTYPE_CLOCK ? "clock" : t == __WASI_EVENTTYPE_FD_READ ? "fd_read" : "fd_write";
}

/* Poll and print the events (nbytes is left out: for files it is the runtime's estimate). */
static __wasi_size_t poll_show(const char *label, __wasi_subscription_t *subs, size_t n) {
    __wasi_event_t ev[8];
    __wasi_size_t got = 0;
    memset(ev, 0, sizeof ev);
    __wasi_errno_t e = __wasi_poll_oneoff(subs, ev, n, &got);
    printf("poll_oneoff %s -> %s events=%u\n", label, errname(e), (unsigned)got);
    qsort(ev, got, sizeof ev[0], by_userdata);
    for (__wasi_size_t i = 0; i < got; i++) {
        printf("  userdata=%llu type=%s error=%s", (unsigned long long)ev[i].userdata, type_name(ev[i].type),
               errname(ev[i].error));
        printf("\n");
    }
    return got;
}

static __wasi_timestamp_t now(__wasi_clockid_t id) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(id, 1, &t);
    return t;
}

int main(void) {
    __wasi_subscription_t subs[4];

    puts("== clocks");
    __wasi_timestamp_t t0 = now(__WASI_CLOCKID_MONOTONIC);
    subs[0] = clock_sub(1, __WASI_CLOCKID_MONOTONIC, 20 * MS, 0);
    poll_show("relative 20ms", subs, 1);
    check(now(__WASI_CLOCKID_MONOTONIC) - t0 >= 20 * MS, "slept at least 20ms");

    t0 = now(__WASI_CLOCKID_MONOTONIC);
    subs[0] = clock_sub(2, __WASI_CLOCKID_MONOTONIC, t0 + 15 * MS, 1);
    poll_show("absolute monotonic +15ms", subs, 1);
    check(now(__WASI_CLOCKID_MONOTONIC) >= t0 + 15 * MS, "woke after the absolute deadline");

    subs[0] = clock_sub(3, __WASI_CLOCKID_MONOTONIC, 1, 1);
    poll_show("absolute in the past", subs, 1);

    subs[0] = clock_sub(4, __WASI_CLOCKID_REALTIME, 5 * MS, 0);
    poll_show("relative realtime 5ms", subs, 1);

    subs[0] = clock_sub(5, __WASI_CLOCKID_MONOTONIC, 0, 0);
    poll_show("relative 0", subs, 1);

    /* Two clocks: only the earlier one fires. */
    t0 = now(__WASI_CLOCKID_MONOTONIC);
    subs[0] = clock_sub(6, __WASI_CLOCKID_MONOTONIC, 10 * MS, 0);
    subs[1] = clock_sub(7, __WASI_CLOCKID_MONOTONIC, 10000 * MS, 0);
    poll_show("10ms and 10s", subs, 2);
    check(now(__WASI_CLOCKID_MONOTONIC) - t0 < 5000 * MS, "did not wait for the later clock");

    puts("== descriptors");
    make_file("poll.txt", "0123456789");
    __wasi_fd_t fd;
    SHOW("path_open poll.txt", open_at(PREOPEN, "poll.txt", 0, 0, &fd));
    /* A regular file is always ready; how many ready events one call reports is the runtime's choice,
       so each direction is polled on its own. */
    subs[0] = fd_sub(10, __WASI_EVENTTYPE_FD_READ, fd);
    subs[1] = clock_sub(11, __WASI_CLOCKID_MONOTONIC, 10000 * MS, 0);
    t0 = now(__WASI_CLOCKID_MONOTONIC);
    poll_show("file readable, 10s clock", subs, 2);
    check(now(__WASI_CLOCKID_MONOTONIC) - t0 < 5000 * MS, "a readable file does not wait for the clock");
    subs[0] = fd_sub(12, __WASI_EVENTTYPE_FD_WRITE, fd);
    subs[1] = clock_sub(13, __WASI_CLOCKID_MONOTONIC, 10000 * MS, 0);
    t0 = now(__WASI_CLOCKID_MONOTONIC);
    poll_show("file writable, 10s clock", subs, 2);
    check(now(__WASI_CLOCKID_MONOTONIC) - t0 < 5000 * MS, "a writable file does not wait for the clock");

    subs[0] = fd_sub(20, __WASI_EVENTTYPE_FD_WRITE, 1);
    subs[1] = fd_sub(21, __WASI_EVENTTYPE_FD_WRITE, 2);
    poll_show("stdout+stderr writable", subs, 2);

    subs[0] = fd_sub(30, __WASI_EVENTTYPE_FD_READ, 0);
    subs[1] = clock_sub(31, __WASI_CLOCKID_MONOTONIC, 10000 * MS, 0);
    poll_show("stdin readable", subs, 2);

    subs[0] = fd_sub(40, __WASI_EVENTTYPE_FD_READ, 77);
    subs[1] = fd_sub(41, __WASI_EVENTTYPE_FD_WRITE, 77);
    poll_show("descriptor not open", subs, 2);

    subs[0] = fd_sub(50, __WASI_EVENTTYPE_FD_READ, PREOPEN);
    subs[1] = clock_sub(51, __WASI_CLOCKID_MONOTONIC, 50 * MS, 0);
    poll_show("a directory", subs, 2);

    (void)__wasi_fd_close(fd);
    subs[0] = fd_sub(60, __WASI_EVENTTYPE_FD_READ, fd);
    poll_show("a closed descriptor", subs, 1);

    puts("== no subscriptions");
    __wasi_event_t ev[1];
    __wasi_size_t got = 0;
    SHOW("poll_oneoff nsubscriptions=0", __wasi_poll_oneoff(subs, ev, 0, &got));
    return finish(0);
}
