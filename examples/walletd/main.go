// Command walletd is the example wallet service: it demands elevated
// tokens from stepup-agent for its sensitive endpoints (see package
// examples/wallet).
//
//	walletd                          # unix:$XDG_RUNTIME_DIR/walletd.sock
//	walletd -listen unix:PATH
//	walletd -listen 127.0.0.1:8420   # loopback TCP
//
// By default it listens on a Unix socket in a 0700 directory, mode 0600:
// only its user can reach it, so a token another local user has seen
// cannot be used against it. On loopback TCP every local user can
// connect, so it then verifies every scope online with the agent (a
// token revoked by stepupctl reset or lock stops working at once).
//
// It prints "walletd listening on URL" once it accepts requests (URL is
// unix:PATH or http://ADDR; walletctl -url takes either).
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
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/examples/wallet"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"go.uber.org/zap"
)

func main() {
	listen := flag.String("listen", defaultListen(), "where to listen: unix:`PATH` (the default), or a loopback ADDR (port 0 picks one)")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "walletd: %v\n", err)
		os.Exit(1)
	}
}

func defaultListen() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("walletd-%d", os.Getuid()))
	}
	return "unix:" + filepath.Join(dir, "walletd.sock")
}

func run(addr string) error {
	ln, url, online, err := listen(addr)
	if err != nil {
		return err
	}
	log, _ := zap.NewDevelopment()
	defer log.Sync()
	client := &stepup.Client{}
	srv := &http.Server{Handler: wallet.NewServer(wallet.Config{Client: client, Logger: log, OnlineSign: online}), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Printf("walletd listening on %s\n", url)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// listen opens addr: a Unix socket only this user can reach, or a
// loopback TCP address (online is then true: verify everything online).
func listen(addr string) (ln net.Listener, url string, online bool, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		dir := filepath.Dir(path)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, "", false, err
		}
		if fi, err := os.Stat(dir); err != nil {
			return nil, "", false, err
		} else if fi.Mode().Perm()&0o077 != 0 {
			return nil, "", false, fmt.Errorf("%s is open to other users (mode %04o): chmod 700 it, or choose another -listen unix:PATH", dir, fi.Mode().Perm())
		} else if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			return nil, "", false, fmt.Errorf("%s belongs to uid %d, not to you: choose another -listen unix:PATH", dir, st.Uid)
		}
		os.Remove(path) // a stale socket of ours: the directory is ours alone
		old := syscall.Umask(0o177)
		ln, err = net.Listen("unix", path)
		syscall.Umask(old)
		return ln, "unix:" + path, false, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", false, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, "", false, fmt.Errorf("%s is not a loopback address; this example listens on loopback only", addr)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, "", false, err
	}
	return ln, "http://" + ln.Addr().String(), true, nil
}
