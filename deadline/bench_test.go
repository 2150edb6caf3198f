package deadline

import (
	"net"
	"testing"
	"time"
)

// BenchmarkRequestDeadlines is the deadline work net/http does for one
// keep-alive request with caproxy's four server timeouts, on a loopback
// connection: as the runtime does it (a timer per future deadline), and as
// a Listener's connection does it.
func BenchmarkRequestDeadlines(b *testing.B) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := NewListener(tcp, 250*time.Millisecond)
	defer ln.Close()
	client, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	swept, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer swept.Close()
	for _, bc := range []struct {
		name string
		conn net.Conn
	}{
		{"runtime", swept.(*conn).Conn},
		{"swept", swept},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.conn
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				c.SetReadDeadline(now.Add(30 * time.Second))  // ReadTimeout, for the body
				c.SetWriteDeadline(now.Add(30 * time.Second)) // WriteTimeout
				c.SetReadDeadline(time.Time{})                // background read starts
				c.SetReadDeadline(past)                       // ... and is aborted
				c.SetReadDeadline(time.Time{})
				c.SetWriteDeadline(time.Time{})
				c.SetReadDeadline(now.Add(120 * time.Second)) // IdleTimeout
				c.SetReadDeadline(now.Add(5 * time.Second))   // ReadHeaderTimeout
			}
		})
	}
}
