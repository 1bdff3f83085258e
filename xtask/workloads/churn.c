/* Load generator for `cargo xtask bench` and `cargo xtask soak`.
 *
 *   churn socket N [RATE]        N x socket()+close(), at RATE per second (0: full speed)
 *   churn connect PORT N         N x socket()+connect(127.0.0.1:PORT)+close()
 *   churn getppid N              N x getppid() (an unrelated syscall)
 *   churn leak N                 leak N sockets
 *   churn serve                  accept and close connections forever (prints "port P")
 *   churn deep D N RATE LEAK     N x socket()+close() D calls below main (0..8, each level with
 *                                a frame of its own size), at RATE per second, leaking 1 in LEAK
 *   churn tick N                 leak N sockets, then socket()+close() three calls deep for each
 *                                further line on stdin, until it closes
 *
 * Built twice: with frame pointers (churn) and without (churn_nofp).
 *
 * Waits for a line on stdin before starting (so a tracer can attach), prints
 * "ns_per_op X ops N" when done, then holds its fds until stdin closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) static int make_socket(void) { return socket(AF_INET, SOCK_STREAM, 0); }

static volatile long sink;
static long leak_every;

__attribute__((noinline)) static int open_close(long n) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd >= 0 && !(leak_every > 0 && n % leak_every == 0)) close(fd);
  sink += fd + n;
  return fd;
}

/* Each level has a frame of its own size, so the unwind rows differ level to level. */
#define LEVEL(name, next, words)                                  \
  __attribute__((noinline)) static int name(long n) {             \
    volatile long buf[words];                                     \
    buf[n % (words)] = n;                                         \
    int r = next(n + 1);                                          \
    sink += buf[(n + 1) % (words)];                               \
    return r + 1;                                                 \
  }
LEVEL(f1, open_close, 3)
LEVEL(f2, f1, 5)
LEVEL(f3, f2, 9)
LEVEL(f4, f3, 17)
LEVEL(f5, f4, 33)
LEVEL(f6, f5, 65)
LEVEL(f7, f6, 7)
LEVEL(f8, f7, 11)
static int (*const levels[])(long) = {open_close, f1, f2, f3, f4, f5, f6, f7, f8};

/* Sleeps until op `i` (of a run started at t0) is due at `rate` per second. */
static void pace(long long t0, long i, long rate) {
  if (rate <= 0) return;
  long long due = t0 + (i + 1) * 1000000000LL / rate;
  long long d = due - now_ns();
  if (d > 0) {
    struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
    nanosleep(&ts, NULL);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  char line[64];
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!strcmp(mode, "serve")) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 4096)) return 1;
    getsockname(l, (struct sockaddr *)&sa, &len);
    printf("ready %d\nport %d\n", getpid(), ntohs(sa.sin_port));
    for (;;) {
      int c = accept(l, NULL, NULL);
      if (c >= 0) close(c);
    }
  }
  printf("ready %d\n", getpid());
  if (!fgets(line, sizeof line, stdin)) return 1;
  long n = argc > 2 ? atol(argv[2]) : 0;
  long long t0 = now_ns();
  if (!strcmp(mode, "socket")) {
    long rate = argc > 3 ? atol(argv[3]) : 0;
    for (long i = 0; i < n; i++) {
      close(make_socket());
      if (rate > 0 && i % 64 == 63) { /* pace in small batches */
        long long due = t0 + (i + 1) * 1000000000LL / rate;
        long long d = due - now_ns();
        if (d > 0) {
          struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
          nanosleep(&ts, NULL);
        }
      }
    }
  } else if (!strcmp(mode, "connect")) {
    int port = atoi(argv[2]);
    n = argc > 3 ? atol(argv[3]) : 0;
    t0 = now_ns();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (long i = 0; i < n; i++) {
      int fd = make_socket();
      struct linger lg = {1, 0}; /* RST on close: no TIME_WAIT pile-up across runs */
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
      close(fd);
    }
  } else if (!strcmp(mode, "deep")) {
    int depth = atoi(argv[2]);
    if (depth < 0 || depth > 8) depth = 8;
    n = argc > 3 ? atol(argv[3]) : 0;
    long rate = argc > 4 ? atol(argv[4]) : 0;
    leak_every = argc > 5 ? atol(argv[5]) : 0;
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
      levels[depth](i);
      if (i % 8 == 7) pace(t0, i, rate);
    }
  } else if (!strcmp(mode, "tick")) {
    for (long i = 0; i < n; i++)
      if (make_socket() < 0) { perror("socket"); return 1; }
    printf("ns_per_op 0 ops %ld\n", n);
    for (long i = 0; fgets(line, sizeof line, stdin); i++) levels[3](i);
    return 0;
  } else if (!strcmp(mode, "getppid")) {
    for (long i = 0; i < n; i++) getppid();
  } else if (!strcmp(mode, "leak")) {
    for (long i = 0; i < n; i++)
      if (make_socket() < 0) { perror("socket"); return 1; }
  } else {
    return 2;
  }
  long long t1 = now_ns();
  printf("ns_per_op %.1f ops %ld\n", n ? (double)(t1 - t0) / n : 0.0, n);
  while (fgets(line, sizeof line, stdin)) {}
  return 0;
}
