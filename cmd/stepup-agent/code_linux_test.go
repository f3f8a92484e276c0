package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const smapsSample = `00400000-00988000 r-xp 00000000 fe:00 9977964                            /opt/stepup agent/bin/stepup-agent
Size:               5664 kB
Rss:                5080 kB
Anonymous:             0 kB
00988000-01012000 r--p 00588000 fe:00 9977964                            /opt/stepup agent/bin/stepup-agent
Rss:                4500 kB
Anonymous:             0 kB
01012000-01077000 rw-p 00c10000 fe:00 9977964                            /opt/stepup agent/bin/stepup-agent
Rss:                 340 kB
Anonymous:            88 kB
01077000-01078000 r--p 00c75000 fe:00 9977964                            /opt/stepup agent/bin/stepup-agent
Rss:                   4 kB
Anonymous:             4 kB
01078000-01079000 r--s 00c76000 fe:00 9977964                            /opt/stepup agent/bin/stepup-agent
Anonymous:             0 kB
7f20b99a0000-7f20b9c00000 rw-p 00000000 00:00 0 
Rss:                 576 kB
Anonymous:           576 kB
7f20c0000000-7f20c0010000 r-xp 00000000 fe:00 1234                       /opt/stepup agent/bin/stepup-agent-old
Anonymous:             0 kB
7ffd1c1f3000-7ffd1c1f7000 r--p 00000000 00:00 0                          [vvar]
Anonymous:             0 kB
`

// Only the executable's private, read-only mappings without a page of
// their own are dropped: not its data, not a relocated (or patched)
// read-only mapping, not a shared one, not another file's.
func TestCodeMappings(t *testing.T) {
	got := codeMappings([]byte(smapsSample), "/opt/stepup agent/bin/stepup-agent")
	want := []mapping{{0x400000, 0x988000}, {0x988000, 0x1012000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("codeMappings = %x, want %x", got, want)
	}
}

// rssOfMapping reads the Rss of the mapping at addr from smaps.
func rssOfMapping(t *testing.T, addr uintptr) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if m, _, ok := mappingHeader([]byte(line), ""); ok {
			in = m.lo == addr
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); in && ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no mapping at %#x", addr)
	return 0
}

// Dropping a file's clean private mapping empties its RSS and loses
// nothing (the next read faults the file's bytes back); a read-only
// mapping holding a page written before mprotect keeps it.
func TestDropMappingsOf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "code")
	page := os.Getpagesize()
	content := bytes.Repeat([]byte("stepup-agent code page\n"), 16*page/23+1)[:16*page]
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	clean, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(clean)
	// A private copy made read-only after a write: like the relocated
	// data of a position-independent build, or a breakpoint.
	patched, err := unix.Mmap(int(f.Fd()), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(patched)
	patched[0] = 'P'
	if err := unix.Mprotect(patched, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(clean); i += page {
		touched += int(clean[i])
	}
	cleanAt := uintptr(unsafe.Pointer(&clean[0]))
	if rss := rssOfMapping(t, cleanAt); rss == 0 {
		t.Fatalf("the clean mapping is not resident after reading it")
	}
	if n := dropMappingsOf(path); n != int64(len(content)) {
		t.Errorf("dropped %d bytes, want the clean mapping's %d", n, len(content))
	}
	if rss := rssOfMapping(t, cleanAt); rss != 0 {
		t.Errorf("the clean mapping holds %d kB after the drop, want 0", rss)
	}
	if !bytes.Equal(clean, content) {
		t.Errorf("the clean mapping reads other bytes after the drop")
	}
	if patched[0] != 'P' {
		t.Errorf("the patched read-only mapping lost its written page")
	}
}

var touched int

// The agent's own code: dropping it shrinks the process's file-backed
// RSS, and the code goes on running (this test returns).
func TestDropCode(t *testing.T) {
	before := rssFile(t)
	if n := dropCode(); n == 0 {
		exe, _ := os.Readlink("/proc/self/exe")
		t.Fatalf("dropCode dropped nothing of %s", exe)
	}
	if after := rssFile(t); after >= before {
		t.Errorf("RssFile %d kB after dropCode, %d kB before", after, before)
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	_, v, _ := strings.Cut(string(b), "\nRssFile:")
	v, _, _ = strings.Cut(v, "\n")
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
