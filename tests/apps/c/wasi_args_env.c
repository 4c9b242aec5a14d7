/*
 * args_sizes_get, args_get, environ_sizes_get, environ_get.
 * Prints every argument and environment entry, checks that the sizes the host
 * reports match the strings it then returns, and exits with status 3 so that a
 * non-zero exit code from a normal `main` return is compared too.
 */
#include "wasi_check.h"

static void show_vector(const char *what, __wasi_size_t count, __wasi_size_t bufsize,
                        uint8_t **vec, uint8_t *buf) {
    size_t total = 0;
    printf("%s count=%u bufsize=%u\n", what, (unsigned)count, (unsigned)bufsize);
    for (__wasi_size_t i = 0; i < count; i++) {
        size_t len = strlen((const char *)vec[i]);
        printf("%s[%u]=%s\n", what, (unsigned)i, (const char *)vec[i]);
        check(vec[i] >= buf && vec[i] + len < buf + bufsize, "entry lies inside the buffer");
        total += len + 1;
    }
    check(total == bufsize, "sizes agree with the strings");
}

int main(void) {
    __wasi_size_t argc = 0, argsize = 0, envc = 0, envsize = 0;

    SHOW("args_sizes_get", __wasi_args_sizes_get(&argc, &argsize));
    uint8_t **argv = calloc(argc + 1, sizeof *argv);
    uint8_t *argbuf = calloc(argsize + 1, 1);
    SHOW("args_get", __wasi_args_get(argv, argbuf));
    show_vector("arg", argc, argsize, argv, argbuf);

    SHOW("environ_sizes_get", __wasi_environ_sizes_get(&envc, &envsize));
    uint8_t **envp = calloc(envc + 1, sizeof *envp);
    uint8_t *envbuf = calloc(envsize + 1, 1);
    SHOW("environ_get", __wasi_environ_get(envp, envbuf));
    show_vector("env", envc, envsize, envp, envbuf);

    /* The libc view must agree with the raw calls. */
    const char *greeting = getenv("GREETING");
    printf("getenv GREETING=%s\n", greeting ? greeting : "(unset)");
    printf("getenv NOT_SET=%s\n", getenv("NOT_SET") ? "set" : "(unset)");
    return finish(3);
}
