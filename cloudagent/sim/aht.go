package sim

import "time"

// ahtFor returns the simulated AHT of an agent or campaign as "HH:MM:SS".
// It is deterministic for an id at a given time (so tests and caches can
// compare answers) and drifts slowly with the clock, a few seconds per ten
// minutes, so a stale answer can be told from a fresh one over long spans.
func ahtFor(kind, id string, now time.Time) string {
	h := fnv1a(kind, id)
	base := 20 + int64(h%300) // 20 s .. 5 min 19 s

	// A triangle wave over a 240-minute period, offset per id: it rises one
	// second every three minutes for two hours, then falls back.
	const period = 240
	phase := (now.Unix()/60 + int64(h>>32%period)) % period
	if phase < 0 {
		phase += period
	}
	if phase > period/2 {
		phase = period - phase
	}
	return formatHMS(base + phase/3)
}

// fnv1a hashes kind, a separator and id without allocating.
func fnv1a(kind, id string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(kind); i++ {
		h = (h ^ uint64(kind[i])) * prime
	}
	h *= prime // separator byte 0
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * prime
	}
	return h
}

// formatHMS formats seconds as CloudAgent does: "HH:MM:SS".
func formatHMS(sec int64) string {
	b := [8]byte{0, 0, ':', 0, 0, ':', 0, 0}
	two := func(at int, v int64) {
		b[at], b[at+1] = byte('0'+v/10%10), byte('0'+v%10)
	}
	two(0, sec/3600)
	two(3, sec/60%60)
	two(6, sec%60)
	return string(b[:])
}
