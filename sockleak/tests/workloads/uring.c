/* sockleak test workload: an io_uring server. One command per line on stdin, "ok ..." on stdout.
 *   listen        listen on 127.0.0.1:0 with socket(2); reply: port
 *   accept N      N single-shot IORING_OP_ACCEPT (clients connect from the test); reply: fds
 *   maccept N     one multishot accept, until N connections; reply: fds
 *   socket N      N IORING_OP_SOCKET; reply: fds
 *   close N       IORING_OP_CLOSE of the first N fds made by "socket"; reply: closed fds
 *   direct N      N IORING_OP_SOCKET into fixed-file slots (not fds); reply: slots
 *   dclose N      IORING_OP_CLOSE of the first N fixed-file slots
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX 256

static struct io_uring ring;
static int listener = -1;
static int made[MAX], nmade, nclosed;

static int wait_one(unsigned long long *ud, int *flags) {
  struct io_uring_cqe *cqe;
  if (io_uring_wait_cqe(&ring, &cqe)) return -1;
  int res = cqe->res;
  if (ud) *ud = cqe->user_data;
  if (flags) *flags = cqe->flags;
  io_uring_cqe_seen(&ring, cqe);
  return res;
}

static void reply(const int *v, int n) {
  printf("ok");
  for (int i = 0; i < n; i++) printf(" %d", v[i]);
  printf("\n");
  fflush(stdout);
}

/* The call sites: each submits its own kind of request. */
__attribute__((noinline)) static void submit_accept(int multishot) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (multishot)
    io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, 0);
  else
    io_uring_prep_accept(sqe, listener, NULL, NULL, 0);
  sqe->user_data = multishot ? 2 : 1;
  io_uring_submit(&ring);
}

__attribute__((noinline)) static void submit_socket(int slot) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (slot >= 0)
    io_uring_prep_socket_direct(sqe, AF_INET, SOCK_STREAM, 0, slot, 0);
  else
    io_uring_prep_socket(sqe, AF_INET, SOCK_STREAM, 0, 0);
  sqe->user_data = 3;
  io_uring_submit(&ring);
}

static void submit_close(int fd, int direct) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (direct)
    io_uring_prep_close_direct(sqe, fd);
  else
    io_uring_prep_close(sqe, fd);
  sqe->user_data = 4;
  io_uring_submit(&ring);
}

int main(void) {
  char line[128];
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (io_uring_queue_init(64, &ring, 0)) return 1;
  if (io_uring_register_files_sparse(&ring, 64)) return 1;
  printf("ready %d\n", getpid());
  while (fgets(line, sizeof line, stdin)) {
    char cmd[32] = {0};
    int a = 0;
    sscanf(line, "%31s %d", cmd, &a);
    if (!strcmp(cmd, "listen")) {
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      socklen_t len = sizeof sa;
      listener = socket(AF_INET, SOCK_STREAM, 0);
      if (bind(listener, (struct sockaddr *)&sa, sizeof sa) || listen(listener, 512)) return 1;
      getsockname(listener, (struct sockaddr *)&sa, &len);
      int port = ntohs(sa.sin_port);
      reply(&port, 1);
    } else if (!strcmp(cmd, "accept")) {
      int fds[MAX];
      for (int i = 0; i < a; i++) {
        submit_accept(0);
        fds[i] = wait_one(NULL, NULL);
      }
      reply(fds, a);
    } else if (!strcmp(cmd, "maccept")) {
      int fds[MAX], n = 0, flags = 0;
      submit_accept(1);
      while (n < a) {
        int r = wait_one(NULL, &flags);
        if (r >= 0) fds[n++] = r;
        if (!(flags & IORING_CQE_F_MORE) && n < a) submit_accept(1);
      }
      reply(fds, n);
    } else if (!strcmp(cmd, "socket")) {
      int fds[MAX];
      for (int i = 0; i < a; i++) {
        submit_socket(-1);
        fds[i] = made[nmade++] = wait_one(NULL, NULL);
      }
      reply(fds, a);
    } else if (!strcmp(cmd, "close")) {
      int fds[MAX], n = 0;
      for (int i = 0; i < a && nclosed < nmade; i++) {
        int fd = made[nclosed++];
        submit_close(fd, 0);
        if (wait_one(NULL, NULL) == 0) fds[n++] = fd;
      }
      reply(fds, n);
    } else if (!strcmp(cmd, "direct")) {
      int slots[MAX];
      for (int i = 0; i < a; i++) {
        submit_socket(i);
        slots[i] = wait_one(NULL, NULL) == 0 ? i : -1;
      }
      reply(slots, a);
    } else if (!strcmp(cmd, "dclose")) {
      int ok = 0;
      for (int i = 0; i < a; i++) {
        submit_close(i, 1);
        if (wait_one(NULL, NULL) == 0) ok++;
      }
      reply(&ok, 1);
    } else if (!strcmp(cmd, "exit")) {
      return 0;
    }
  }
  return 0;
}
