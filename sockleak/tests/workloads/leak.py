# A Python service that leaks: `python3 leak.py PORT N [MODE]` prints "ready", and on a line
# opens N connections from open_leaky_connection (two calls below main) that it never closes,
# then prints "done". MODE: "main" (the main thread, the default), "thread" (a worker
# thread), "exec" (then it execs a fresh Python, keeping the sockets: their stacks were walked
# in an image that is gone), "exit" (then it exits at once). Works on Python 3.8 and later.
import os
import socket
import sys
import threading

kept = []


def open_leaky_connection(port):
    kept.append(socket.create_connection(("127.0.0.1", port)))


def leak_many(port, n):
    for _ in range(n):
        open_leaky_connection(port)


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "main"
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "thread":
        t = threading.Thread(target=leak_many, args=(port, n), name="worker")
        t.start()
        t.join()
    else:
        leak_many(port, n)
    if mode == "exec":
        for s in kept:
            s.set_inheritable(True)
        code = "import sys; print('done', flush=True); sys.stdin.readline()"
        os.execv(sys.executable, [sys.executable, "-c", code])
    if mode == "exit":
        os._exit(0)
    print("done", flush=True)
    sys.stdin.readline()


main()
