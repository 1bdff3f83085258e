# Load generator for `cargo xtask bench`: socket()+close() from a function two calls below
# main, in CPython (its frames walked by sockleak with no flag).
#
#   python3 churn.py socket N [RATE [KEEP]]   N x socket()+close(), at RATE per second (0: full
#                                             speed), keeping 1 socket in KEEP open (0: none)
#
# Prints "ready PID", waits for a line on stdin, prints "ns_per_op X ops N" when done, then
# holds its sockets until stdin closes. Python 3.8 and later.
import os
import socket
import sys
import time

kept = []


def make_socket(keep):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if keep:
        kept.append(s)
    else:
        s.close()


def churn(n, rate, keep):
    t0 = time.monotonic_ns()
    for i in range(n):
        make_socket(keep > 0 and i % keep == 0)
        if rate > 0 and i % 64 == 63:
            d = t0 + (i + 1) * 1_000_000_000 // rate - time.monotonic_ns()
            if d > 0:
                time.sleep(d / 1e9)
    return time.monotonic_ns() - t0


def main():
    n = int(sys.argv[2])
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    keep = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    print("ready", os.getpid(), flush=True)
    sys.stdin.readline()
    ns = churn(n, rate, keep)
    print("ns_per_op", ns / n, "ops", n, flush=True)
    sys.stdin.readline()


main()
