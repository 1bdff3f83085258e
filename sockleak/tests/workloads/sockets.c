/* sockleak test workload: reads one command per line on stdin and answers "ok ..." on stdout.
 * Each socket-making command goes through its own named function, so tests can check that
 * sockleak attributes sockets to the right call site. Built with -O0 -fno-omit-frame-pointer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int leaked[65536];
static int nleaked;

__attribute__((noinline)) int leak_tcp_site(void) { return socket(AF_INET, SOCK_STREAM, 0); }
__attribute__((noinline)) int churn_udp_site(void) { return socket(AF_INET, SOCK_DGRAM, 0); }
__attribute__((noinline)) int cloexec_site(void) {
  return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

__attribute__((noinline)) int accept_site(int l) { return accept4(l, NULL, NULL, 0); }
__attribute__((noinline)) int client_site(void) { return socket(AF_INET, SOCK_STREAM, 0); }

static int listener = -1;

static void reply_fds(int *fds, int n) {
  printf("ok");
  for (int i = 0; i < n; i++) printf(" %d", fds[i]);
  printf("\n");
  fflush(stdout);
}

int main(void) {
  char line[256];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", getpid());
  while (fgets(line, sizeof line, stdin)) {
    char cmd[64] = {0};
    long a = 0, b = 0;
    sscanf(line, "%63s %ld %ld", cmd, &a, &b);
    if (!strcmp(cmd, "leak")) { /* leak N tcp sockets from leak_tcp_site */
      int fds[4096], n = 0;
      for (long i = 0; i < a; i++) fds[n++] = leaked[nleaked++] = leak_tcp_site();
      reply_fds(fds, n);
    } else if (!strcmp(cmd, "churn")) { /* open and close N udp sockets */
      for (long i = 0; i < a; i++) close(churn_udp_site());
      reply_fds(NULL, 0);
    } else if (!strcmp(cmd, "cloexec")) { /* N close-on-exec sockets */
      int fds[4096], n = 0;
      for (long i = 0; i < a; i++) fds[n++] = cloexec_site();
      reply_fds(fds, n);
    } else if (!strcmp(cmd, "dup")) { /* dup(fd) */
      int fd = dup((int)a);
      reply_fds(&fd, 1);
    } else if (!strcmp(cmd, "dup2")) { /* dup2(a, b) */
      int fd = dup2((int)a, (int)b);
      reply_fds(&fd, 1);
    } else if (!strcmp(cmd, "dupfd")) { /* fcntl(a, F_DUPFD_CLOEXEC, b) */
      int fd = fcntl((int)a, F_DUPFD_CLOEXEC, (int)b);
      reply_fds(&fd, 1);
    } else if (!strcmp(cmd, "close")) {
      close((int)a);
      reply_fds(NULL, 0);
    } else if (!strcmp(cmd, "close_range")) {
      syscall(SYS_close_range, (unsigned)a, (unsigned)b, 0);
      reply_fds(NULL, 0);
    } else if (!strcmp(cmd, "fork")) {
      /* The child closes inherited fds a..b, opens one socket of its own and waits. */
      int p[2];
      if (pipe(p)) return 1;
      pid_t pid = fork();
      if (pid == 0) {
        close(p[0]);
        for (long fd = a; fd <= b; fd++) close((int)fd);
        int own = leak_tcp_site();
        (void)own;
        if (write(p[1], "x", 1) != 1) _exit(1);
        for (;;) pause();
      }
      close(p[1]);
      char c;
      if (read(p[0], &c, 1) != 1) return 1;
      close(p[0]);
      int r = pid;
      reply_fds(&r, 1);
    } else if (!strcmp(cmd, "exec")) { /* become `sleep 1000`, keeping non-CLOEXEC fds */
      printf("ok\n");
      fflush(stdout);
      execl("/bin/sleep", "sleep", "1000", (char *)NULL);
      return 1;
    } else if (!strcmp(cmd, "listen")) { /* listen on 127.0.0.1:0, backlog a; reply port */
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      socklen_t len = sizeof sa;
      listener = socket(AF_INET, SOCK_STREAM, 0);
      if (bind(listener, (struct sockaddr *)&sa, sizeof sa) || listen(listener, (int)a)) return 1;
      getsockname(listener, (struct sockaddr *)&sa, &len);
      int port = ntohs(sa.sin_port);
      reply_fds(&port, 1);
    } else if (!strcmp(cmd, "accept_hold")) { /* accept a connections, never close them */
      int fds[4096], n = 0;
      for (long i = 0; i < a; i++) fds[n++] = accept_site(listener);
      reply_fds(fds, n);
    } else if (!strcmp(cmd, "accept_loop")) {
      /* Accept and keep until accept4 has failed a times with EMFILE (1 ms apart, like a
       * server's retry loop); reply: accepted failures. */
      int ok = 0, fails = 0;
      while (fails < a) {
        int fd = accept_site(listener);
        if (fd >= 0) ok++;
        else if (errno == EMFILE) { fails++; usleep(1000); }
      }
      int r[2] = {ok, fails};
      reply_fds(r, 2);
    } else if (!strcmp(cmd, "accept_backoff")) {
      /* The fixed loop: like accept_loop, but waits 300 ms after each EMFILE (as Go's server
       * does) instead of retrying at once; reply: accepted failures. */
      int ok = 0, fails = 0;
      while (fails < a) {
        int fd = accept_site(listener);
        if (fd >= 0) ok++;
        else if (errno == EMFILE) { fails++; usleep(300000); }
      }
      int r[2] = {ok, fails};
      reply_fds(r, 2);
    } else if (!strcmp(cmd, "accept_drain")) {
      /* The fixed server: accept a connections, read each to EOF and close it; reply: closed. */
      int fds[4096], n = 0, closed = 0;
      char buf[256];
      for (long i = 0; i < a; i++) fds[n++] = accept_site(listener);
      for (int i = 0; i < n; i++) {
        while (read(fds[i], buf, sizeof buf) > 0) {}
        close(fds[i]);
        closed++;
      }
      reply_fds(&closed, 1);
    } else if (!strcmp(cmd, "socket_emfile")) {
      /* Make sockets until socket() fails with EMFILE, then fail a times in total. */
      int made = 0, fails = 0;
      while (fails < a) {
        int fd = client_site();
        if (fd >= 0) made++;
        else if (errno == EMFILE) fails++;
      }
      int r[2] = {made, fails};
      reply_fds(r, 2);
    } else if (!strcmp(cmd, "connect_churn")) {
      /* connect to 127.0.0.1:a and close (so this side holds TIME_WAIT), b times, counting
       * EADDRNOTAVAIL failures instead once ports run out; reply: connected failures. */
      int ok = 0, fails = 0;
      for (long i = 0; i < b; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((int)a),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = client_site();
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) ok++;
        else if (errno == EADDRNOTAVAIL) fails++;
        close(fd);
      }
      int r[2] = {ok, fails};
      reply_fds(r, 2);
    } else if (!strcmp(cmd, "exit")) {
      return 0;
    } else {
      printf("error unknown command %s\n", cmd);
    }
  }
  return 0;
}
