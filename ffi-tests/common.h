/* Helpers shared by the C tests (C11). Every failure prints where and why, then exits 1. */
#ifndef VSGD_FFI_TESTS_COMMON_H
#define VSGD_FFI_TESTS_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vsgd.h"

static inline const char *last_error(void) {
    /* Per-thread buffer: the thread test calls this from several threads. */
    static _Thread_local char buf[512];
    buf[0] = '\0';
    vsgd_last_error(buf, sizeof buf, NULL);
    return buf;
}

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define CHECK_OK(call)                                                                    \
    do {                                                                                  \
        vsgd_result r_ = (call);                                                          \
        if (r_ != VSGD_RESULT_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call,     \
                    vsgd_result_name(r_), last_error());                                  \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#endif
