"""The Python twin of `churn deep`: pyloop.py deep DEPTH N RATE LEAK_EVERY.

N x socket()+close() DEPTH Python calls below the loop, at RATE per second, leaking 1 in
LEAK_EVERY. Prints "ready PID", waits for a line on stdin, runs, prints "ns_per_op X ops N",
then holds its sockets until stdin closes.
"""
import os
import socket
import sys
import time

depth, count, rate, leak_every = (int(a) for a in sys.argv[2:6])
kept = []


def open_close(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if leak_every and n % leak_every == 0:
        kept.append(s)
    else:
        s.close()


def level(d, n):
    if d == 0:
        return open_close(n)
    return level(d - 1, n)


print("ready", os.getpid(), flush=True)
sys.stdin.readline()
t0 = time.monotonic()
for i in range(count):
    level(depth, i)
    if rate and i % 8 == 7:
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
el = time.monotonic() - t0
print("ns_per_op %.1f ops %d" % (el * 1e9 / count, count), flush=True)
sys.stdin.read()
