// Command walletd is the example wallet service: it listens on a loopback
// address and demands elevated tokens from stepup-agent for its sensitive
// endpoints (see package examples/wallet).
//
//	walletd -listen 127.0.0.1:8420
//
// It prints "walletd listening on http://ADDR" once it accepts requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/examples/wallet"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"go.uber.org/zap"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8420", "loopback `ADDR` to listen on (port 0 picks one)")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "walletd: %v\n", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address; this example listens on loopback only", addr)
	}
	log, _ := zap.NewDevelopment()
	defer log.Sync()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	client := &stepup.Client{}
	srv := &http.Server{Handler: wallet.NewServer(wallet.Config{Client: client, Logger: log}), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Printf("walletd listening on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
