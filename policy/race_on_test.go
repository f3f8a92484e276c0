//go:build race

package policy

// raceEnabled: the race detector slows parsing about tenfold.
const raceEnabled = true
