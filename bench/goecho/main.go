// Command goecho is the Go floor of the stepup-agent benchmarks
// (docs/BENCHMARKS.md): a line echo server over a Unix socket written the
// plain Go way, a goroutine per connection on net and bufio, flushing when
// the input is drained. Whatever a Go server does per request costs at
// least this; the difference to bench/echo.c is the Go runtime's share.
//
//	go run ./bench/goecho /tmp/goecho.sock
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goecho SOCKET")
		os.Exit(2)
	}
	os.Remove(os.Args[1])
	ln, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "goecho:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriterSize(c, 4096)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		w.Write(line)
		if r.Buffered() == 0 && w.Flush() != nil {
			return
		}
	}
}
