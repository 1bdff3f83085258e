// Calls the library's leaking functions three calls deep. Commands on stdin: `warm` (one
// socket, closed, from the library), `tcp N` / `udp N` (N sockets leaked through each path),
// `exit`.
#include <stdio.h>
#include <string.h>

int lib_leak_tcp(void);
int lib_leak_udp(void);
int lib_warm(void);

static volatile int sink;

// Work after each call keeps it a call (no tail call), and noinline keeps each frame.
__attribute__((noinline)) int tcp3(void) { int r = lib_leak_tcp(); sink += r; return r; }
__attribute__((noinline)) int tcp2(void) { int r = tcp3(); sink += r; return r; }
__attribute__((noinline)) int tcp1(int n) { int ok = 0; for (int i = 0; i < n; i++) ok += tcp2(); sink += ok; return ok; }
__attribute__((noinline)) int udp3(void) { int r = lib_leak_udp(); sink += r; return r; }
__attribute__((noinline)) int udp2(void) { int r = udp3(); sink += r; return r; }
__attribute__((noinline)) int udp1(int n) { int ok = 0; for (int i = 0; i < n; i++) ok += udp2(); sink += ok; return ok; }

int main(void) {
    char line[64];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "tcp %d", &n) == 1) {
            printf("ok %d\n", tcp1(n));
        } else if (sscanf(line, "udp %d", &n) == 1) {
            printf("ok %d\n", udp1(n));
        } else if (strncmp(line, "warm", 4) == 0) {
            printf("ok %d\n", lib_warm());
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0;
        }
    }
    return 0;
}
