/* Must be caught by UndefinedBehaviorSanitizer (signed integer overflow). */
#include <limits.h>
#include <stdio.h>

int main(int argc, char **argv) {
    (void)argv;
    volatile int x = INT_MAX - 1 + argc; /* INT_MAX */
    printf("%d\n", x + 1);
    return 0;
}
