// Bench workload for the Go HTTP origin probes: `httpbench keepalive|leaky N ADDR` prints
// "ready PID", waits for a line, sends N GETs to ADDR and prints "ns_per_op X" (per request).
//
//	keepalive  one shared Transport, bodies read and closed: every request reuses the one
//	           keep-alive connection (a healthy client)
//	leaky      a new Transport per request (seed incident 1): every request dials and leaves
//	           its connection open in its own idle pool
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func get(c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func main() {
	mode := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	url := "http://" + os.Args[3] + "/"
	shared := &http.Client{Transport: &http.Transport{}}
	fmt.Printf("ready %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	start := time.Now()
	for i := 0; i < n; i++ {
		if mode == "leaky" {
			get(&http.Client{Transport: &http.Transport{}}, url)
		} else {
			get(shared, url)
		}
	}
	fmt.Printf("ns_per_op %d\n", time.Since(start).Nanoseconds()/int64(n))
	// Hold the connections until killed, as a leaking service does.
	select {}
}
