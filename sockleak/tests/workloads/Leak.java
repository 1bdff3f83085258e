import java.io.*;
import java.net.*;
import java.util.*;

// A Java service that leaks: `java Leak PORT N` prints "ready", and on each line opens N
// connections from openLeakyConnection that it never closes, then prints "done".
public class Leak {
    static final List<Socket> kept = new ArrayList<>();

    static void openLeakyConnection(int port) throws IOException {
        kept.add(new Socket("127.0.0.1", port));
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]), n = Integer.parseInt(args[1]);
        System.out.println("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        while (in.readLine() != null) {
            for (int i = 0; i < n; i++) openLeakyConnection(port);
            System.out.println("done");
        }
    }
}
