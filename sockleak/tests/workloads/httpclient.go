// Test HTTP client reproducing seed incident 1 and its relatives. Each mode's requests are sent
// by a function of its own (the line marked `origin:MODE` calls Get), so a report's call site
// can be checked against the source:
//
//	leaky     builds a new http.Transport per request: every keep-alive connection stays open
//	          in its own idle pool
//	fixed     shares one Transport and closes bodies (and keeps requesting like a service)
//	unclosed  shares one Transport but never reads or closes the (64 KiB) response bodies, so
//	          no connection goes back to the pool
//	tls       leaky over HTTPS (ADDR is a TLS server)
//	wrapped   a shared Transport whose DialContext wraps each net.Conn in a type of its own,
//	          bodies never closed; requests alternate between two functions and two servers
//	          (ADDR, ADDR2), so a socket joined to the wrong function shows the wrong peer
//	dual      leaky towards a name that resolves to ::1 and 127.0.0.1 (an in-process DNS
//	          answers): Go's dialer races the two on goroutines of its own
//
// Prints "ready", waits for a line on stdin, makes N requests, prints "done"; `fixed` then
// keeps requesting, the others hold their sockets.
// usage: httpclient ADDR leaky|fixed|unclosed|tls|wrapped|dual N [ADDR2]
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

var shared = &http.Client{Transport: &http.Transport{}}

// The responses are kept (unread, unclosed) as a careless caller would.
var kept []*http.Response

func drain(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func keep(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	kept = append(kept, resp)
	return nil
}

func requestNewTransport(url string) error {
	transport := &http.Transport{TLSHandshakeTimeout: 5 * time.Second}
	client := http.Client{Timeout: 5 * time.Second, Transport: transport}
	return drain(client.Get(url)) // origin:leaky
}

func requestShared(url string) error {
	return drain(shared.Get(url)) // origin:fixed
}

func requestNeverClosed(url string) error {
	return keep(shared.Get(url + "?size=65536")) // origin:unclosed
}

func requestNewTransportTLS(url string) error {
	transport := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	client := http.Client{Timeout: 5 * time.Second, Transport: transport}
	return drain(client.Get(url)) // origin:tls
}

type wrapConn struct{ net.Conn }

var wrapped = &http.Client{Transport: &http.Transport{
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &wrapConn{c}, nil
	},
}}

func requestWrappedFirst(url string) error {
	return keep(wrapped.Get(url)) // origin:wrapped-first
}

func requestWrappedSecond(url string) error {
	return keep(wrapped.Get(url)) // origin:wrapped-second
}

// fakeDNS answers one stream of DNS queries: A 127.0.0.1 and AAAA ::1 for any name.
func fakeDNS(c net.Conn) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, int(l[0])<<8|int(l[1]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		i := 12
		for i < len(q) && q[i] != 0 {
			i += int(q[i]) + 1
		}
		qtype := int(q[i+1])<<8 | int(q[i+2])
		resp := []byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}
		resp = append(resp, q[12:i+5]...)
		var rdata []byte
		switch qtype {
		case 1:
			rdata = net.ParseIP("127.0.0.1").To4()
		case 28:
			rdata = net.ParseIP("::1").To16()
		}
		if rdata != nil {
			resp[7] = 1
			resp = append(resp, 0xc0, 12, byte(qtype>>8), byte(qtype), 0, 1, 0, 0, 0, 60, 0, byte(len(rdata)))
			resp = append(resp, rdata...)
		}
		c.Write(append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...))
	}
}

var dualResolver = &net.Resolver{
	PreferGo: true,
	Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		a, b := net.Pipe()
		go fakeDNS(b)
		return a, nil
	},
}

func requestDualStack(url string) error {
	transport := &http.Transport{DialContext: (&net.Dialer{Resolver: dualResolver}).DialContext}
	client := http.Client{Timeout: 5 * time.Second, Transport: transport}
	return drain(client.Get(url)) // origin:dual
}

func main() {
	addr, mode := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	url := "http://" + addr + "/api/status"
	get := func(int) error { return requestShared(url) }
	switch mode {
	case "leaky":
		get = func(int) error { return requestNewTransport(url) }
	case "unclosed":
		get = func(int) error { return requestNeverClosed(url) }
	case "tls":
		get = func(int) error { return requestNewTransportTLS("https://" + addr + "/api/status") }
	case "wrapped":
		second := "http://" + os.Args[4] + "/api/status"
		get = func(i int) error {
			if i%2 == 0 {
				return requestWrappedFirst(url)
			}
			return requestWrappedSecond(second)
		}
	case "dual":
		port := addr[strings.LastIndex(addr, ":")+1:]
		get = func(int) error { return requestDualStack("http://dual.test:" + port + "/api/status") }
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < n; i++ {
		if err := get(i); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("done")
	for {
		if mode == "fixed" {
			get(0)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
