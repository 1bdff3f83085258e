import java.io.*;
import java.net.*;

// Load generator for `cargo xtask bench`: socket()+close() from a method two calls below
// main, in the JVM (run with -Xint so every frame stays interpreted: what sockleak names
// with no flag).
//
//   java Churn socket N
//
// Prints "ready PID", waits for a line on stdin, prints "ns_per_op X ops N" when done, then
// waits for stdin to close.
public class Churn {
    static void makeSocket() throws IOException {
        java.nio.channels.SocketChannel.open().close();
    }

    static long churn(long n) throws IOException {
        long t0 = System.nanoTime();
        for (long i = 0; i < n; i++) makeSocket();
        return System.nanoTime() - t0;
    }

    public static void main(String[] args) throws Exception {
        long n = Long.parseLong(args[1]);
        System.out.println("ready " + ProcessHandle.current().pid());
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        in.readLine();
        long ns = churn(n);
        System.out.println("ns_per_op " + ((double) ns / n) + " ops " + n);
        in.readLine();
    }
}
