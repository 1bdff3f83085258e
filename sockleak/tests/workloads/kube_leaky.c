// Test app: opens N TCP connections to itself on 127.0.0.1 (a listener on an ephemeral port, so
// several copies can share the host network), keeps both ends open, then sleeps until SIGTERM.
// usage: leaky [N [DELAY_SECONDS]]: waits DELAY_SECONDS first (so a tracer can attach).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    if (argc > 2) sleep(atoi(argv[2]));
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, n + 1) || getsockname(l, (void *)&a, &al)) {
        perror("listen");
        return 1;
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (void *)&a, sizeof a)) { perror("connect"); break; }
        if (accept(l, 0, 0) < 0) { perror("accept"); break; }
        ok++;
    }
    printf("leaky: %d connections to 127.0.0.1:%d open\n", ok, ntohs(a.sin_port));
    fflush(stdout);
    for (;;) pause();
}
