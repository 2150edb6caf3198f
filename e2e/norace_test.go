//go:build !race

package e2e

// raceEnabled is false: the binary under test is built without -race.
const raceEnabled = false
