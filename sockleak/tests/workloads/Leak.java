import java.io.*;
import java.net.*;
import java.util.*;

// A Java service that leaks: `java Leak PORT N` prints "ready", and on each line opens N
// connections from openLeakyConnection that it never closes, then prints "done". Other lines:
//   "warm M": M connections from openLeakyConnection, closed (reset) a hundred at a time, so
//              the JIT compiles it; then "warmed".
//   "unload R DIR": R rounds, each loading VictimA or VictimB (in turn, from DIR) with a class
//              loader of its own, opening N connections from its open() and leaking them, then
//              dropping the loader and collecting it (class unloading: metaspace is reused, a
//              Method* may come back as another method); then "unloaded".
// Compiled for Java 11 (javac --release 11).
public class Leak {
    static final List<Socket> kept = new ArrayList<>();

    static void openLeakyConnection(int port) throws IOException {
        kept.add(new Socket("127.0.0.1", port));
    }

    static void leakMany(int port, int n) throws IOException {
        for (int i = 0; i < n; i++) openLeakyConnection(port);
    }

    // The same code as the leak (so the compiled code is the leak's), closed as it goes.
    static void warm(int port, int m) throws IOException {
        for (int i = 0; i < m; i++) {
            openLeakyConnection(port);
            if (kept.size() == 100 || i == m - 1) {
                for (Socket s : kept) {
                    s.setSoLinger(true, 0);
                    s.close();
                }
                kept.clear();
            }
        }
    }

    static void unload(int port, int n, int rounds, String dir) throws Exception {
        URL[] path = {new File(dir).toURI().toURL()};
        for (int i = 0; i < rounds; i++) {
            URLClassLoader l = new URLClassLoader(path, ClassLoader.getPlatformClassLoader());
            Class<?> c = l.loadClass(i % 2 == 0 ? "VictimA" : "VictimB");
            for (int j = 0; j < n; j++) {
                kept.add((Socket) c.getMethod("open", int.class).invoke(null, port));
            }
            // Time for a tracer to name the frames while the class is loaded.
            Thread.sleep(300);
            l.close();
            l = null;
            c = null;
            System.gc();
            // Time for a tracer to see the classes go.
            Thread.sleep(500);
        }
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]), n = Integer.parseInt(args[1]);
        System.out.println("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            String[] w = line.trim().split(" ");
            if (w[0].equals("warm")) {
                warm(port, Integer.parseInt(w[1]));
                System.out.println("warmed");
            } else if (w[0].equals("unload")) {
                unload(port, n, Integer.parseInt(w[1]), w[2]);
                System.out.println("unloaded");
            } else {
                leakMany(port, n);
                System.out.println("done");
            }
        }
    }
}
