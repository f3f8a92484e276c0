package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink [][]byte

// After a burst the trim hands the free heap back; a trim with nothing
// allocated since does not even collect.
func TestTrimAfterBurst(t *testing.T) {
	for range 256 {
		sink = append(sink, make([]byte, 32<<10)) // 8 MiB, then garbage
	}
	sink = nil
	released := readMetric("/memory/classes/heap/released:bytes")
	var tr trimmer
	tr.trim()
	if got := readMetric("/memory/classes/heap/released:bytes") - released; got < 4<<20 {
		t.Errorf("the trim handed back %d bytes of an 8 MiB burst", got)
	}
	cycles := readMetric("/gc/cycles/total:gc-cycles")
	tr.trim()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n != cycles {
		t.Errorf("a trim with nothing allocated since ran %d collections", n-cycles)
	}
}

// A trim whose timer fires while a client is connected again is skipped.
func TestTrimSkippedWhenBusy(t *testing.T) {
	for range 256 {
		sink = append(sink, make([]byte, 32<<10)) // enough for a trim
	}
	sink = nil
	runtime.GC() // and no collection of its own under way
	cycles := readMetric("/gc/cycles/total:gc-cycles")
	tr := trimmer{busy: func() bool { return true }}
	tr.fire()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n != cycles {
		t.Errorf("a busy agent was trimmed (%d collections)", n-cycles)
	}
}

// Once start-up is over the agent trims whatever start-up allocated,
// unless a client is already being served.
func TestTrimOnceStarted(t *testing.T) {
	runtime.GC()
	cycles := readMetric("/gc/cycles/total:gc-cycles")
	serving := true
	busy := trimmer{busy: func() bool { return serving }}
	busy.started()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n != cycles {
		t.Errorf("an agent serving its first client was trimmed (%d collections)", n-cycles)
	}
	// That client leaves: the trim it fires is the start-up's, however
	// little was allocated since.
	serving = false
	busy.fire()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n == cycles {
		t.Errorf("the start-up trim put off by a client did not run when it left")
	}
	cycles = readMetric("/gc/cycles/total:gc-cycles")
	busy.fire()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n != cycles {
		t.Errorf("a second idle with nothing allocated trimmed again (%d collections)", n-cycles)
	}
	cycles = readMetric("/gc/cycles/total:gc-cycles")
	var tr trimmer
	tr.started()
	if n := readMetric("/gc/cycles/total:gc-cycles"); n == cycles {
		t.Errorf("the trim once started ran no collection")
	}
}
