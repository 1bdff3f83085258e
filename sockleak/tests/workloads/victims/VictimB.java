import java.io.IOException;
import java.net.Socket;

// Loaded, used and unloaded in turn with VictimA by Leak's "unload": the same code, so its
// methods may reuse each other's memory. It connects to the port after VictimA's, so its
// sockets can be told from VictimA's by their peer.
public class VictimB {
    public static Socket open(int port) throws IOException {
        return new Socket("127.0.0.1", port + 1);
    }
}
