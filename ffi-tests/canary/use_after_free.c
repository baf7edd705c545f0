/* Must be reported by valgrind memcheck (invalid read of freed memory). */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    int *volatile p = malloc(16);
    if (!p) return 2;
    p[0] = 7;
    free(p);
    printf("%d\n", p[0]);
    return 0;
}
