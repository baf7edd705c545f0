/* Must be reported as a definite leak by LeakSanitizer and by valgrind memcheck. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char *volatile p = malloc(1000);
    if (!p) return 2;
    p[0] = 'x';
    printf("%c\n", p[0]);
    p = NULL; /* the only pointer is gone: definitely lost */
    return 0;
}
