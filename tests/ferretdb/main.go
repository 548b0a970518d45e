// Command ferretdb-fixture runs an embedded FerretDB (v1, SQLite handler) as a
// MongoDB-wire test server for the broker's MongoDB store tests.
//
// It is a TEST FIXTURE ONLY; it is never part of the product.
//
// Usage:
//
//	ferretdb-fixture -dir DATA_DIR -listen 127.0.0.1:PORT [-log-level warn]
//
// Once the server accepts connections it prints exactly one line
//
//	READY 127.0.0.1:PORT
//
// on stdout (PORT is the real port, also when 0 was asked for). All logs go to
// stderr. SIGTERM or SIGINT stops it cleanly (exit status 0); a second signal,
// or a shutdown taking longer than 15 s, exits at once with status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ferretdb-fixture: "+format+"\n", args...)
	os.Exit(2)
}

// loopbackAddr validates that addr is HOST:PORT with a loopback host and
// returns it normalized ("localhost" becomes 127.0.0.1).
func loopbackAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("bad -listen %q: %v (want 127.0.0.1:PORT)", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("refusing -listen %q: only loopback addresses (127.0.0.0/8, ::1) are allowed", addr)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func main() {
	dir := flag.String("dir", "", "data directory for SQLite files (created if missing; required)")
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on; loopback only")
	logLevel := flag.String("log-level", "warn", "log level on stderr: debug, info, warn, error")
	flag.Parse()

	if flag.NArg() != 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	if *dir == "" {
		fatalf("-dir is required")
	}
	addr, err := loopbackAddr(*listen)
	if err != nil {
		fatalf("%v", err)
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		fatalf("bad -log-level %q: %v", *logLevel, err)
	}

	absDir, err := filepath.Abs(*dir)
	if err != nil {
		fatalf("bad -dir %q: %v", *dir, err)
	}
	if err = os.MkdirAll(absDir, 0o755); err != nil {
		fatalf("cannot create -dir: %v", err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	// FerretDB's SQLite handler wants a "file:" URI naming a directory
	// (ending with "/"); each MongoDB database becomes one .sqlite file there.
	sqliteURL := (&url.URL{Scheme: "file", Opaque: strings.TrimSuffix(absDir, "/") + "/"}).String()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		fatalf("cannot start FerretDB (listen %s, dir %s): %v", addr, absDir, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	// The listening socket is bound inside ferretdb.New; MongoDBURI gives the
	// real address (it blocks until the listener is ready).
	u, err := url.Parse(f.MongoDBURI())
	if err != nil || u.Host == "" {
		fatalf("cannot determine listen address from %q: %v", f.MongoDBURI(), err)
	}
	realAddr := u.Host

	// Make sure a TCP connection really gets through before announcing READY.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, derr := net.DialTimeout("tcp", realAddr, time.Second)
		if derr == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			fatalf("listener %s does not accept connections: %v", realAddr, derr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	fmt.Printf("READY %s\n", realAddr)
	_ = os.Stdout.Sync()
	logger.Info("ferretdb-fixture ready", slog.String("addr", realAddr), slog.String("dir", absDir))

	select {
	case err = <-done:
		// Run returned without a signal: unexpected.
		if err == nil {
			err = errors.New("server stopped unexpectedly")
		}
		fmt.Fprintf(os.Stderr, "ferretdb-fixture: %v\n", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	stop() // a second SIGTERM/SIGINT now kills the process the default way

	logger.Info("ferretdb-fixture stopping")
	select {
	case err = <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "ferretdb-fixture: stop: %v\n", err)
			os.Exit(1)
		}
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "ferretdb-fixture: clean shutdown took over 15 s; exiting")
		os.Exit(1)
	}
}
