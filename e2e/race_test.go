//go:build race

package e2e

// raceEnabled builds the binary under test with -race when the tests
// themselves run with -race, so data races in the real processes show up.
const raceEnabled = true
