// Changes its address space under a tracer. `dlopen A B N`: after a line on stdin, forks a
// child that runs `exec 300` (prints "chain PID"), then loads library A or B in turn (each unloaded before the next
// is loaded, so they reuse addresses), makes a socket from it and closes it, N times; prints
// "done", then makes a socket from its own code and closes it for each further line ("ok"),
// until stdin closes. `exec N`: makes a socket and replaces itself with a new
// image of this program, N times; the last one (argv "exec 0") keeps its socket and waits to
// be killed. Built without frame pointers.
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) static int one_socket(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sink += fd;
    return fd;
}

int main(int argc, char **argv) {
    char line[16];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && strcmp(argv[1], "exec") == 0) {
        int n = atoi(argv[2]);
        int fd = one_socket();
        if (n > 0) {
            char next[16];
            snprintf(next, sizeof next, "%d", n - 1);
            if (fd >= 0) close(fd);
            execl("/proc/self/exe", argv[0], "exec", next, (char *)NULL);
            return 1;
        }
        for (;;)
            pause();
    } else if (argc >= 5 && strcmp(argv[1], "dlopen") == 0) {
        printf("ready %d\n", getpid());
        if (!fgets(line, sizeof line, stdin)) return 1;
        pid_t child = fork();
        if (child == 0) {
            execl("/proc/self/exe", argv[0], "exec", "300", (char *)NULL);
            _exit(1);
        }
        printf("chain %d\n", child);
        int n = atoi(argv[4]);
        for (int i = 0; i < n; i++) {
            void *h = dlopen(argv[2 + (i & 1)], RTLD_NOW | RTLD_LOCAL);
            if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
            int (*warm)(void) = (int (*)(void))dlsym(h, "lib_warm");
            if (warm) sink += warm();
            dlclose(h);
        }
        printf("done\n");
    } else {
        return 2;
    }
    // Steady state: the address space no longer changes, so these stacks are the ones a
    // tracer's tables can walk.
    while (fgets(line, sizeof line, stdin)) {
        int fd = one_socket();
        if (fd >= 0) close(fd);
        printf("ok\n");
    }
    return 0;
}
