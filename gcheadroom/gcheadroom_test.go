package gcheadroom

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// percent is the GC percent in force.
func percent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// goal is the runtime's heap goal for a live heap at percent p (stacks and
// globals left out): live grown by p%, at least 4 MiB × p/100.
func goal(live uint64, p int) uint64 {
	return max(live+live*uint64(p)/100, heapMinimum*uint64(p)/100)
}

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	const room = 32 * mib
	for _, tc := range []struct {
		name string
		live uint64
		want int // 0: only the properties below are checked
	}{
		{"nothing live yet", 0, 0},
		{"tiny heap", 512 << 10, 0},
		{"small heap", 2 * mib, 0},
		{"heap a quarter of the room", 8 * mib, 400},
		{"heap as large as the room: base", 32 * mib, 100},
		{"large heap: base", 500 * mib, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Percent(tc.live, room, 100)
			if tc.want != 0 && p != tc.want {
				t.Fatalf("Percent(%d) = %d, want %d", tc.live, p, tc.want)
			}
			if p < 100 {
				t.Fatalf("Percent(%d) = %d, below the base 100", tc.live, p)
			}
			g, base := goal(tc.live, p), goal(tc.live, 100)
			// Never more than room above what the base percent allows.
			if g > max(base, tc.live+room) {
				t.Fatalf("live %d: goal %d at %d%%, more than %d room above base goal %d", tc.live, g, p, room, base)
			}
			// At least the room (within rounding), or the base's own.
			if g+mib < min(tc.live+room, max(base, tc.live+room)) {
				t.Fatalf("live %d: goal %d at %d%% leaves less than %d room", tc.live, g, p, room)
			}
		})
	}
}

func TestPercentKeepsHigherBase(t *testing.T) {
	if p := Percent(500<<20, 32<<20, 300); p != 300 {
		t.Fatalf("Percent with base 300 on a large heap = %d, want 300", p)
	}
}

// Run raises the percent on this test's small heap and gives the base
// back when it stops.
func TestRunSetsAndRestores(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, 32<<20, 100, time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if percent() > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not raise the GC percent on a small heap")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if p := percent(); p != 100 {
		t.Fatalf("after Run: percent %d, want the base 100 back", p)
	}
}
