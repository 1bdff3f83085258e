// Test HTTP client reproducing seed incident 1: `leaky` builds a new http.Transport per
// request, so every keep-alive connection stays open in its own idle pool; `fixed` shares one
// Transport; `unclosed` shares one Transport but never reads or closes the (64 KiB) response
// bodies, so no connection goes back to the pool. Prints "ready", waits for a line on stdin,
// makes N requests, prints "done"; `fixed` then keeps requesting like a service under load,
// the others hold their sockets.
// usage: httpclient ADDR leaky|fixed|unclosed N
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

var shared = &http.Client{Transport: &http.Transport{}}

func fetchLeaky(url string) error {
	transport := &http.Transport{TLSHandshakeTimeout: 5 * time.Second}
	client := http.Client{Timeout: 5 * time.Second, Transport: transport}
	return fetch(&client, url)
}

func fetchFixed(url string) error {
	return fetch(shared, url)
}

// The response is kept (unread, unclosed) as a careless caller would.
var kept []*http.Response

func fetchUnclosed(url string) error {
	resp, err := shared.Get(url + "?size=65536")
	if err != nil {
		return err
	}
	kept = append(kept, resp)
	return nil
}

func fetch(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

func main() {
	url := "http://" + os.Args[1] + "/api/status"
	mode := os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	get := fetchFixed
	switch mode {
	case "leaky":
		get = fetchLeaky
	case "unclosed":
		get = fetchUnclosed
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < n; i++ {
		if err := get(url); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("done")
	for {
		if mode == "fixed" {
			get(url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
