/* sockleak test workload: sockets that arrive without socket()/accept(). One command per line
 * on stdin, "ok ..." on stdout.
 *   pass N          a forked child makes N TCP sockets and sends them over a unix socketpair
 *                   (SCM_RIGHTS, one message; the receiving end has SO_PASSCRED, so the kernel
 *                   adds the sender's pid); reply: the received fds, then the child's pid
 *   close N         close the first N received fds
 *   hold N          make N TCP sockets and keep them; reply: their fds
 *   getfd PID FD..  take fds from process PID with pidfd_getfd; reply: the new fds
 *   unhooked        pass one of its own sockets to itself over a socketpair and receive it with
 *                   io_uring's IORING_OP_RECVMSG, a path sockleak does not hook; reply: new fd
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXFDS 64

static int received[MAXFDS];
static int nreceived;

static int send_fds(int sock, const int *fds, int n) {
  char dummy = 'x';
  struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
  char ctrl[CMSG_SPACE(sizeof(int) * MAXFDS)];
  memset(ctrl, 0, sizeof ctrl);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * n);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

/* Receives one message; returns the number of fds and the sender's pid (SCM_CREDENTIALS). */
__attribute__((noinline)) static int receive_site(int sock, int *out, pid_t *sender) {
  char dummy;
  struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
  char ctrl[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * MAXFDS)];
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                       .msg_controllen = sizeof ctrl};
  if (recvmsg(sock, &msg, 0) != 1) return -1;
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS) {
      struct ucred u;
      memcpy(&u, CMSG_DATA(c), sizeof u);
      *sender = u.pid;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      memcpy(out, CMSG_DATA(c), sizeof(int) * n);
    }
  }
  return n;
}

__attribute__((noinline)) static int getfd_site(int pidfd, int fd) {
  return syscall(SYS_pidfd_getfd, pidfd, fd, 0);
}

static void reply(const int *v, int n) {
  printf("ok");
  for (int i = 0; i < n; i++) printf(" %d", v[i]);
  printf("\n");
  fflush(stdout);
}

int main(void) {
  char line[512];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", getpid());
  while (fgets(line, sizeof line, stdin)) {
    char cmd[32] = {0};
    int a = 0;
    sscanf(line, "%31s %d", cmd, &a);
    if (!strcmp(cmd, "pass")) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
      int one = 1;
      setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
      pid_t child = fork();
      if (child == 0) {
        close(sv[0]);
        int fds[MAXFDS];
        for (int i = 0; i < a; i++) fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        _exit(send_fds(sv[1], fds, a) ? 1 : 0);
      }
      close(sv[1]);
      pid_t sender = 0;
      nreceived = receive_site(sv[0], received, &sender);
      waitpid(child, NULL, 0);
      int out[MAXFDS + 1];
      memcpy(out, received, sizeof(int) * nreceived);
      out[nreceived] = sender;
      reply(out, nreceived + 1);
    } else if (!strcmp(cmd, "close")) {
      for (int i = 0; i < a && i < nreceived; i++) close(received[i]);
      reply(NULL, 0);
    } else if (!strcmp(cmd, "hold")) {
      int fds[MAXFDS];
      for (int i = 0; i < a; i++) fds[i] = socket(AF_INET, SOCK_STREAM, 0);
      reply(fds, a);
    } else if (!strcmp(cmd, "getfd")) {
      /* getfd PID FD FD ... */
      char *p = line;
      strtok(p, " \n");
      int pid = atoi(strtok(NULL, " \n"));
      int pidfd = syscall(SYS_pidfd_open, pid, 0);
      if (pidfd < 0) return 1;
      int out[MAXFDS], n = 0;
      for (char *t = strtok(NULL, " \n"); t && n < MAXFDS; t = strtok(NULL, " \n"))
        out[n++] = getfd_site(pidfd, atoi(t));
      close(pidfd);
      reply(out, n);
    } else if (!strcmp(cmd, "unhooked")) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)) return 1;
      int s = socket(AF_INET, SOCK_DGRAM, 0);
      if (send_fds(sv[1], &s, 1)) return 1;
      struct io_uring ring;
      if (io_uring_queue_init(4, &ring, 0)) return 1;
      char dummy;
      struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
      char ctrl[CMSG_SPACE(sizeof(int))];
      struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                           .msg_controllen = sizeof ctrl};
      struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
      io_uring_prep_recvmsg(sqe, sv[0], &msg, 0);
      io_uring_submit(&ring);
      struct io_uring_cqe *cqe;
      io_uring_wait_cqe(&ring, &cqe);
      io_uring_cqe_seen(&ring, cqe);
      int got = -1;
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&got, CMSG_DATA(c), sizeof got);
      io_uring_queue_exit(&ring);
      reply(&got, 1);
    } else if (!strcmp(cmd, "exit")) {
      return 0;
    }
  }
  return 0;
}
