package sim

// slidingLog is a trailing-window log of event times (Unix nanoseconds): an
// event is admitted only if fewer than limit earlier admitted events happened
// within the window ending now. Refused events are not recorded, which is how
// CloudAgent counts (and what the proxy's budget must respect). The zero value
// is an empty log. It is not safe for concurrent use; its owner locks it.
type slidingLog struct {
	times []int64 // admitted times, oldest first, from head on
	head  int     // times[:head] have left the window
}

// admit prunes events that left the window (those at or before now-window)
// and records now if fewer than limit remain. It returns whether now was
// admitted and how many admitted events the window holds afterwards.
func (l *slidingLog) admit(now, window int64, limit int) (ok bool, inWindow int) {
	n := l.prune(now - window)
	if n >= limit {
		return false, n
	}
	// Compact once the dead prefix is at least half the slice, so memory
	// stays proportional to the window's content and appends stay amortised O(1).
	if l.head > 0 && 2*l.head >= len(l.times) {
		copy(l.times, l.times[l.head:])
		l.times = l.times[:n]
		l.head = 0
	}
	l.times = append(l.times, now)
	return true, n + 1
}

// prune drops events at or before cutoff and returns how many remain. Times
// are appended in clock order; should an injected clock step back, an entry
// may sit behind a younger one for a while, which only makes the log stricter.
func (l *slidingLog) prune(cutoff int64) int {
	for l.head < len(l.times) && l.times[l.head] <= cutoff {
		l.head++
	}
	if l.head == len(l.times) {
		l.times, l.head = l.times[:0], 0
	}
	return len(l.times) - l.head
}
