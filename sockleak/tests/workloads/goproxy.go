// Test forwarding HTTP proxy (seed incident 2): listens on ADDR and forwards every request
// with http.DefaultTransport.RoundTrip, which honours HTTP_PROXY. Started with HTTP_PROXY
// pointing at its own port, each forwarded request comes back in, and so on until connect
// fails. Prints "listening ADDR"; on the stdin line "count" prints "dials N": the successful
// dials of its transport (the ground truth for its connects).
// usage: goproxy ADDR
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

var dials int64

func forward(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func main() {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t := http.DefaultTransport.(*http.Transport)
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			atomic.AddInt64(&dials, 1)
		}
		return c, err
	}
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", l.Addr())
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if in.Text() == "count" {
				fmt.Printf("dials %d\n", atomic.LoadInt64(&dials))
			}
		}
	}()
	http.Serve(l, http.HandlerFunc(forward))
}
