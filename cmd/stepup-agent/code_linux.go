package main

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropCode unmaps the resident pages of the agent's own code and
// read-only data: the executable's private mappings that are not
// writable and hold no page of their own (Anonymous: 0 kB in smaps, so
// no relocated data of a position-independent build and no debugger's
// breakpoint is there to lose). They are clean pages of the file: the
// page cache keeps them until the kernel wants the memory, and the code
// the next request runs faults back in from it, a minor fault per
// 64 KiB at most. What start-up ran once (package init, the policy's
// parsing, the keychain's first open) and what a burst touched then
// stays out of the agent's RSS, and unmapped, the kernel can reclaim it
// first. It reports the bytes of the mappings it dropped.
func dropCode() int64 {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0
	}
	return dropMappingsOf(exe)
}

// dropMappingsOf unmaps the resident pages of the process's private,
// read-only mappings of the file path that hold no anonymous page.
func dropMappingsOf(path string) int64 {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var dropped int64
	for _, m := range codeMappings(smaps, path) {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.lo, m.hi-m.lo, unix.MADV_DONTNEED); e == 0 {
			dropped += int64(m.hi - m.lo)
		}
	}
	return dropped
}

type mapping struct{ lo, hi uintptr }

// codeMappings reads /proc/self/smaps and returns the private,
// read-only mappings of the file exe that hold no anonymous page.
func codeMappings(smaps []byte, exe string) []mapping {
	var out []mapping
	var cur mapping
	in := false // cur is a read-only private mapping of exe
	for len(smaps) > 0 {
		var line []byte
		line, smaps, _ = bytes.Cut(smaps, []byte("\n"))
		if m, isCode, ok := mappingHeader(line, exe); ok {
			cur, in = m, isCode
			continue
		}
		if !in {
			continue
		}
		// The field lines of a mapping: its Anonymous line decides.
		if v, ok := bytes.CutPrefix(line, []byte("Anonymous:")); ok {
			if string(bytes.TrimSpace(v)) == "0 kB" {
				out = append(out, cur)
			}
			in = false
		}
	}
	return out
}

// mappingHeader parses a mapping's first line in smaps ("lo-hi perms
// offset dev inode path"). ok says it is one; isCode that it is a
// private mapping of the file exe that is not writable.
func mappingHeader(line []byte, exe string) (m mapping, isCode, ok bool) {
	f := bytes.Fields(line)
	if len(f) < 5 || len(f[1]) != 4 {
		return m, false, false
	}
	a, b, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return m, false, false
	}
	lo, err1 := strconv.ParseUint(string(a), 16, 64)
	hi, err2 := strconv.ParseUint(string(b), 16, 64)
	if err1 != nil || err2 != nil || hi <= lo {
		return m, false, false
	}
	m = mapping{uintptr(lo), uintptr(hi)}
	if len(f) < 6 || f[1][1] != '-' || f[1][3] != 'p' {
		return m, false, true
	}
	// The path is the rest of the line, spaces and all.
	i := bytes.Index(line, f[5])
	return m, string(line[i:]) == exe, true
}
