import java.io.IOException;
import java.net.Socket;

// Loaded, used and unloaded in turn with VictimB by Leak's "unload": the same code, so its
// methods may reuse each other's memory.
public class VictimA {
    public static Socket open(int port) throws IOException {
        return new Socket("127.0.0.1", port);
    }
}
