// A shared library built the way distributions build them (-O2, frame pointers per the build):
// two functions that leak a socket each, and one that opens and closes one.
#include <sys/socket.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) int lib_leak_tcp(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sink += fd;
    return fd >= 0;
}

__attribute__((noinline)) int lib_leak_udp(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sink += fd;
    return fd >= 0;
}

__attribute__((noinline)) int lib_warm(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd >= 0)
        close(fd);
    sink += fd;
    return fd >= 0;
}
