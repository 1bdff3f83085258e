# A Python service that leaks: `python3.12 -X perf leak.py PORT N` prints "ready", and on a
# line opens N connections from open_leaky_connection that it never closes, then "done".
import socket
import sys

kept = []


def open_leaky_connection(port):
    kept.append(socket.create_connection(("127.0.0.1", port)))


def leak_many(port, n):
    for _ in range(n):
        open_leaky_connection(port)


port, n = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
leak_many(port, n)
print("done", flush=True)
sys.stdin.readline()
