// Runs as a container's only process (statically linked, in a bare rootfs): waits until the file
// /go exists, then leaks N TCP sockets from leak_in_container() and sleeps.
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) int leak_in_container(void) {
    return socket(AF_INET, SOCK_STREAM, 0);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    while (access("/go", F_OK) != 0)
        usleep(20000);
    for (int i = 0; i < n; i++)
        leak_in_container();
    for (;;)
        pause();
}
