// Test HTTP server on loopback: answers every request ("ok", or ?size=N bytes), keeps
// connections alive (as the server in seed incident 1 did). Prints "listening ADDR".
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", l.Addr())
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, err := strconv.Atoi(r.URL.Query().Get("size")); err == nil {
			w.Write(make([]byte, n))
			return
		}
		fmt.Fprintln(w, "ok")
	}))
}
