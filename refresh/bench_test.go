package refresh

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchKeys are the keys BenchmarkAsked asks for.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("demo|agent|agent%05d", i)
	}
	return keys
}

// askParallel runs Asked from as many goroutines as GOMAXPROCS over keys,
// each from its own place in them.
func askParallel(b *testing.B, s *Scheduler[int], keys []string) {
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(n.Add(7919))
		for pb.Next() {
			i++
			s.Asked(keys[i%len(keys)], "demo", 0, t0, t0.Add(time.Duration(i)*time.Microsecond))
		}
	})
}

// BenchmarkAsked is the cost refresh-ahead adds to every AHT request,
// hits included: one Asked, from as many goroutines as GOMAXPROCS, over
// 1000 keys. Run with -cpu 1,2,4 to see contention.
func BenchmarkAsked(b *testing.B) {
	askParallel(b, New[int](cfg()), benchKeys(1000))
}

// BenchmarkAskedWhileNext is BenchmarkAsked over 10000 tracked keys while
// the refresher's Next scans them back to back, as its Run loop does once
// a tick: asks must not queue behind the scan.
func BenchmarkAskedWhileNext(b *testing.B) {
	s := New[int](cfg())
	keys := benchKeys(10000)
	for _, k := range keys {
		s.Asked(k, "demo", 0, t0, t0) // fresh and cold: Next hands out nothing
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				s.Next(t0.Add(time.Second))
			}
		}
	})
	askParallel(b, s, keys)
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// BenchmarkNextIdle is one look of the refresher's Run loop (once a tick)
// over 100000 tracked keys of which none is due: the idle cost of
// refresh-ahead, per tick.
func BenchmarkNextIdle(b *testing.B) {
	c := cfg()
	c.MaxKeys = 100000
	s := New[int](c)
	for _, k := range benchKeys(100000) {
		s.Asked(k, "demo", 0, t0, t0) // fresh and cold: nothing is due
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Next(t0.Add(time.Second)); ok {
			b.Fatal("a job was due")
		}
	}
}
