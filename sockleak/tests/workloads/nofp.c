// A native service built the way most distribution packages were: -O2 -fomit-frame-pointer.
// Commands on stdin: `warm` (one socket, closed), `leak N` (N sockets from leak_here, two
// calls below main, never closed).
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int kept[65536];
static int nkept;

__attribute__((noinline)) int leak_here(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && nkept < 65536)
        kept[nkept++] = fd;
    return fd >= 0;
}

__attribute__((noinline)) int open_connections(int n) {
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += leak_here();
    return ok;
}

__attribute__((noinline)) void warm(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd >= 0)
        close(fd);
}

int main(void) {
    char line[64];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "leak %d", &n) == 1) {
            printf("ok %d\n", open_connections(n));
        } else if (strncmp(line, "warm", 4) == 0) {
            warm();
            printf("ok\n");
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0;
        }
    }
    return 0;
}
