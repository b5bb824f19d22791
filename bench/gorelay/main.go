// Command gorelay is make bench's yardstick for what any Go proxy can do on
// the bench machine: a bare TCP relay (two goroutines per connection, each
// client bound round-robin to one backend, no protocol parsing). routerd's
// ratio to it separates routerd's own cost from the Go runtime's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:16310", "address to listen on (loopback)")
	backends := flag.String("backends", "", "comma-separated backend addresses")
	flag.Parse()
	if err := run(*listen, strings.Split(*backends, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "gorelay:", err)
		os.Exit(1)
	}
}

func run(listen string, backends []string) error {
	if len(backends) == 0 || backends[0] == "" {
		return errors.New("-backends is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// On a signal the listener closes and the process exits, which closes
	// the relayed connections with it.
	go func() { <-ctx.Done(); ln.Close() }()
	for n := 0; ; n++ {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		b, err := net.Dial("tcp", backends[n%len(backends)])
		if err != nil {
			c.Close()
			fmt.Fprintln(os.Stderr, "gorelay:", err)
			continue
		}
		go pipe(b, c)
		go pipe(c, b)
	}
}

// pipe copies src to dst until either side fails, then closes both. The
// wrappers hide ReadFrom/WriteTo: splice costs more syscalls than a copy for
// small packets.
func pipe(dst, src net.Conn) {
	buf := make([]byte, 16<<10)
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
	dst.Close()
	src.Close()
}
