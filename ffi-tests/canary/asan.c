/* Must be caught by AddressSanitizer (heap-buffer-overflow): proves the sanitizer is active. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    (void)argv;
    int *a = malloc(4 * sizeof *a);
    if (!a) return 2;
    for (int i = 0; i < 4; i++) a[i] = i;
    volatile int index = 3 + argc; /* 4: one past the end */
    printf("%d\n", a[index]);
    free(a);
    return 0;
}
