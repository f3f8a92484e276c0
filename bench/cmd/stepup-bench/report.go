//go:build linux

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// keptHeadings are the sections of docs/BENCHMARKS.md that people write
// by hand; the harness keeps them when it rewrites the file.
var keptHeadings = []string{"## Notes", "## Keychain"}

// keptSections returns the hand-written sections of an old report.
func keptSections(old string) string {
	var out strings.Builder
	lines := strings.SplitAfter(old, "\n")
	for i := 0; i < len(lines); i++ {
		h := strings.TrimRight(lines[i], "\r\n")
		if !slices.ContainsFunc(keptHeadings, func(k string) bool { return h == k || strings.HasPrefix(h, k+" ") }) {
			continue
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "## ") {
			j++
		}
		sec := strings.TrimRight(strings.Join(lines[i:j], ""), "\n")
		out.WriteString(sec + "\n\n")
		i = j - 1
	}
	return out.String()
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func durs[T any](rs []T, f func(T) time.Duration) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = us(f(r))
	}
	return out
}

func floats[T any](rs []T, f func(T) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func spread(xs []float64, format string) string {
	if len(xs) < 2 {
		return "–"
	}
	return fmt.Sprintf(format+" – "+format, slices.Min(xs), slices.Max(xs))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func metStr(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func report(w io.Writer, r *results, keep string) {
	c := r.cfg
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	names := r.servers

	// Medians over rounds.
	latP50, latP99, cpuReq := map[string]float64{}, map[string]float64{}, map[string]float64{}
	rps, tputCPU, tputUtil := map[string]float64{}, map[string]float64{}, map[string]float64{}
	conP50, conP99, conCPU := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, n := range names {
		latP50[n] = medianF(durs(r.lat[n], func(x latencyResult) time.Duration { return x.p50 }))
		latP99[n] = medianF(durs(r.lat[n], func(x latencyResult) time.Duration { return x.p99 }))
		cpuReq[n] = medianF(durs(r.lat[n], func(x latencyResult) time.Duration { return x.cpuPerReq }))
		rps[n] = medianF(floats(r.tput[n], func(x throughputResult) float64 { return x.rps }))
		tputCPU[n] = medianF(durs(r.tput[n], func(x throughputResult) time.Duration { return x.cpuPerReq }))
		tputUtil[n] = medianF(floats(r.tput[n], func(x throughputResult) float64 { return x.cpuUtil }))
		conP50[n] = medianF(durs(r.conn[n], func(x connectResult) time.Duration { return x.p50 }))
		conP99[n] = medianF(durs(r.conn[n], func(x connectResult) time.Duration { return x.p99 }))
		conCPU[n] = medianF(durs(r.conn[n], func(x connectResult) time.Duration { return x.cpuPerConn }))
	}
	A, E, S := nameAgent, nameEcho, nameSSH
	procMed := func(i int) float64 {
		return medianF(durs(r.proc[i].median, func(d time.Duration) time.Duration { return d }))
	}

	p("# Benchmarks\n\n")
	p("stepup-agent measured side by side with OpenSSH's ssh-agent, gpg-agent and a\n")
	p("minimal C echo server (`bench/echo.c`, the floor) over Unix sockets, in one\n")
	p("run of the harness. Regenerate this file (2-4 minutes; needs gcc,\n")
	p("openssh-client and gpg-agent, and uses hyperfine when installed):\n\n")
	p("    go run ./bench/cmd/stepup-bench -o docs/BENCHMARKS.md\n\n")
	p("(`-quick` for a rough run in ~30 s; `-only=memory` for the agent's memory\n")
	p("alone, idle, after the request rounds and with live tokens.) The tables below are written by the\n")
	p("harness; the sections \"Notes\" and \"Keychain\" are written by hand and kept\n")
	p("when it rewrites the file. Go micro-benchmarks of the request path:\n")
	p("`go test -run '^$' -bench . ./ipc/ ./agent/`.\n\n")

	m := r.machine
	p("## This run\n\n")
	p("| | |\n| --- | --- |\n")
	p("| date | %s (took %s) |\n", r.started.Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	p("| tree | `%s` |\n", m.at)
	p("| machine | %d CPUs, %s, %s RAM; %s |\n", m.nproc, m.cpuModel, m.memTotal, m.kernel)
	p("| stepup-agent | built from the tree with %s, `CGO_ENABLED=0` (as shipped on Linux); `--keychain memory --prompter none`, built-in policy |\n", m.goVersion)
	p("| ssh-agent | %s; one ed25519 key loaded |\n", m.ssh)
	p("| gpg-agent | %s; own GNUPGHOME |\n", m.gpg)
	p("| echo | `bench/echo.c`, %s, `-O2` |\n", m.gcc)
	p("| hyperfine | %s |\n", m.hyperfine)
	p("| rounds | %d of each measure, servers in rotating order; every figure is the median of the rounds |\n\n", c.rounds)

	G := nameGPG
	p("## Targets (issue 14)\n\n")
	p("| target | measured | |\n| --- | --- | --- |\n")
	if c.only != "memory" {
		p("| server CPU per sequential `isStepUpRequired` ≤ 1.5× the echo floor's | %.2f µs vs %.2f µs: %s | %s |\n",
			cpuReq[A], cpuReq[E], ratio(cpuReq[A], cpuReq[E]), metStr(cpuReq[A] <= 1.5*cpuReq[E]))
		p("| server CPU per request at %d connections ≤ 2.5× the floor's | %.2f µs vs %.2f µs: %s | %s |\n",
			c.conns, tputCPU[A], tputCPU[E], ratio(tputCPU[A], tputCPU[E]), metStr(tputCPU[A] <= 2.5*tputCPU[E]))
		p("| %d-connection throughput ≥ 1.5× ssh-agent's | %.0f vs %.0f req/s: %s | %s |\n",
			c.conns, rps[A], rps[S], ratio(rps[A], rps[S]), metStr(rps[A] >= 1.5*rps[S]))
		p("| %d-connection throughput ≥ 1.3× gpg-agent's | %.0f vs %.0f req/s: %s | %s |\n",
			c.conns, rps[A], rps[G], ratio(rps[A], rps[G]), metStr(rps[A] >= 1.3*rps[G]))
		p("| new connection + request p50 ≤ ssh-agent's | %.1f µs vs %.1f µs: %s | %s |\n",
			conP50[A], conP50[S], ratio(conP50[A], conP50[S]), metStr(conP50[A] <= conP50[S]))
		if len(r.proc) == 3 {
			p("| `stepupctl check` ≤ `gpg-connect-agent`'s, whole process | %.2f ms vs %.2f ms: %s | %s |\n",
				procMed(0)/1000, procMed(2)/1000, ratio(procMed(0), procMed(2)), metStr(procMed(0) <= procMed(2)))
		}
	}
	if c.only != "requests" {
		p("| RSS idle ≤ 12 MiB | %s (%s anonymous, %s file-backed) | %s |\n", mib(r.rssIdle[A].rss),
			mib(r.rssIdle[A].anon), mib(r.rssIdle[A].file), metStr(r.rssIdle[A].rss <= 12<<20))
		// At rest after the load, and once it has answered again: the
		// larger decides.
		after := max(r.rssLoaded[A].rss, r.rssNext[A].rss)
		p("| RSS after the %d-connection load ≤ 14 MiB | %s at rest, %s after one more request | %s |\n", c.conns,
			mib(r.rssLoaded[A].rss), mib(r.rssNext[A].rss), metStr(after <= 14<<20))
		p("| RSS with %d live tokens ≤ 30 MiB | %s | %s |\n", r.mem.tokens, mib(r.mem.fileTokens.rss),
			metStr(r.mem.tokens >= 10000 && r.mem.fileTokens.rss <= 30<<20))
	}
	p("\n")

	if c.only != "memory" {
		p("## Requests\n\n| server | request (answer) |\n| --- | --- |\n")
		for _, n := range names {
			p("| %s | %s |\n", n, r.requests[n])
		}
		p("\n")

		p("## Server CPU per request\n\n")
		p("utime+stime of the server process from `/proc/PID/stat` before and after\n")
		p("%d requests on one persistent connection (client and server pinned to CPU %d),\n", c.latN, m.nproc-1)
		p("and over the 64-connection run. Lower is better.\n\n")
		p("| server | CPU/request, 1 conn | rounds | × echo | × ssh-agent | CPU/request, %d conns | × echo |\n", c.conns)
		p("| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, n := range names {
			xs := durs(r.lat[n], func(x latencyResult) time.Duration { return x.cpuPerReq })
			p("| %s | %.2f µs | %s | %s | %s | %.2f µs | %s |\n", n, cpuReq[n], spread(xs, "%.2f"),
				ratio(cpuReq[n], cpuReq[E]), ratio(cpuReq[n], cpuReq[S]), tputCPU[n], ratio(tputCPU[n], tputCPU[E]))
		}
		p("\n")

		p("## Latency on one persistent connection\n\n")
		p("Round-trip time of each of %d requests sent one after another, client thread\n", c.latN)
		p("(blocking system calls, no Go scheduler in the path) and server pinned to one CPU.\n\n")
		p("| server | p50 | p99 | p50 rounds | p50 × echo | p50 × ssh-agent |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, n := range names {
			xs := durs(r.lat[n], func(x latencyResult) time.Duration { return x.p50 })
			p("| %s | %.1f µs | %.1f µs | %s | %s | %s |\n", n, latP50[n], latP99[n], spread(xs, "%.1f"),
				ratio(latP50[n], latP50[E]), ratio(latP50[n], latP50[S]))
		}
		p("\n")

		p("## Throughput over %d concurrent connections\n\n", c.conns)
		p("Each connection sends its next request when the answer to the last one has\n")
		p("arrived (no pipelining), for %s per round after a warm-up; client and\n", c.tputDur)
		p("server share the machine's %d CPUs, unpinned. Higher is better.\n\n", m.nproc)
		p("| server | requests/s | rounds | × echo | × ssh-agent | server CPUs busy |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, n := range names {
			xs := floats(r.tput[n], func(x throughputResult) float64 { return x.rps })
			p("| %s | %.0f | %s | %s | %s | %.2f |\n", n, rps[n], spread(xs, "%.0f"),
				ratio(rps[n], rps[E]), ratio(rps[n], rps[S]), tputUtil[n])
		}
		p("\n")

		p("## Connect per request\n\n")
		p("A new connection for each request: connect, read the greeting (gpg-agent),\n")
		p("one request and answer, close; %d per round, pinned as for latency.\n\n", c.connN)
		p("| server | p50 | p99 | p50 × echo | p50 × ssh-agent | server CPU/connection | × echo |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, n := range names {
			p("| %s | %.1f µs | %.1f µs | %s | %s | %.1f µs | %s |\n", n, conP50[n], conP99[n],
				ratio(conP50[n], conP50[E]), ratio(conP50[n], conP50[S]), conCPU[n], ratio(conCPU[n], conCPU[E]))
		}
		p("\n")

		if len(r.proc) == 3 {
			p("## Whole process: `stepupctl check` against `ssh-add -l` and `gpg-connect-agent`\n\n")
			p("Wall time of the whole command (fork, exec, dynamic loading or Go runtime\n")
			p("start, connect, one request, exit), measured with %s: %d rounds of %d runs\n", r.procTool, c.procRound, c.procRuns)
			p("each after 10 warm-up runs, no shell. `stepupctl check` exits 1 here (step-up\n")
			p("is required), `ssh-add -l` exits 0 (it lists the key), `gpg-connect-agent -S SOCK\n")
			p("NOP /bye` sends one Assuan request to gpg-agent's socket and exits 0.\n\n")
			p("| command | median wall | rounds | user | system | × ssh-add -l | × gpg-connect-agent |\n| --- | --- | --- | --- | --- | --- | --- |\n")
			for i, pr := range r.proc {
				xs := durs(pr.median, func(d time.Duration) time.Duration { return d })
				p("| `%s` | %.2f ms | %s | %.2f ms | %.2f ms | %s | %s |\n", pr.name, procMed(i)/1000,
					spread(scale(xs, 1e-3), "%.2f"),
					medianF(durs(pr.userMean, func(d time.Duration) time.Duration { return d }))/1000,
					medianF(durs(pr.sysMean, func(d time.Duration) time.Duration { return d }))/1000,
					ratio(procMed(i), procMed(1)), ratio(procMed(i), procMed(2)))
			}
			p("\n")
		}

	}
	if c.only == "requests" {
		return
	}
	p("## Memory\n\n")
	p("VmRSS from `/proc/PID/status`: idle is one second after the server answers\n")
	p("its first request; \"after the run\" is 2 s after all the rounds above, and\n")
	p("\"then one request\" 100 ms after one more connection and request, once\n")
	p("that reading is taken: stepup-agent unmaps the code a burst ran when it\n")
	p("trims, a second after its last client leaves, and maps again what the\n")
	p("next request runs.\n\n")
	p("| server | RSS idle | anonymous | file-backed | RSS after the run | anonymous | file-backed | then one request |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, n := range names {
		i, l, x := r.rssIdle[n], r.rssLoaded[n], r.rssNext[n]
		p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", n, mib(i.rss), mib(i.anon), mib(i.file), mib(l.rss), mib(l.anon), mib(l.file), mib(x.rss))
	}
	p("\n")
	mr := r.mem
	p("With %d live tokens: the harness writes a keychain file (the `file` backend's\n", mr.tokens)
	p("format, %d KiB) holding a signing key and %d multi-use tokens for scopes\n", mr.keychainSizeKB, mr.tokens)
	p("`bench:00000`..`bench:%05d`, signed with that key, as the agent persists the\n", mr.tokens-1)
	p("tokens it mints. The agent starts with `--keychain file`, loads them, checks\n")
	p("every signature and holds them; the harness checks that the first and the\n")
	p("last scope need no step-up (%v), waits 2 s and reads VmRSS. There is no\n", map[bool]string{true: "they do not", false: "**check failed**"}[mr.verified])
	p("benchmark-only path in the daemon. Each token is bound, as the agent binds\n")
	p("what it mints, to the caller that stepped up (here the harness's own\n")
	p("process, with its parent chain) with the default bind mode, `client`.\n\n")
	p("| stepup-agent `--keychain file` | RSS | anonymous | start until answering |\n| --- | --- | --- | --- |\n")
	p("| no tokens | %s | %s | |\n", mib(mr.fileIdle.rss), mib(mr.fileIdle.anon))
	p("| %d live tokens | %s | %s | %s |\n", mr.tokens, mib(mr.fileTokens.rss), mib(mr.fileTokens.anon), mr.loadTime.Round(time.Millisecond))
	if mr.tokens > 0 {
		p("| per token | %.2f KiB | %.2f KiB | |\n", float64(mr.fileTokens.rss-mr.fileIdle.rss)/1024/float64(mr.tokens),
			float64(mr.fileTokens.anon-mr.fileIdle.anon)/1024/float64(mr.tokens))
	}
	p("\n")

	p("## How it is measured\n\n")
	p("- Everything runs on this machine over Unix sockets in a temporary directory;\n")
	p("  each server has its own XDG directories (stepup-agent) or GNUPGHOME\n")
	p("  (gpg-agent). The harness starts and stops every server by its pid.\n")
	p("- Latency and connect-per-request: the client is one OS thread doing\n")
	p("  blocking `write`/`read` system calls, pinned with `sched_setaffinity` to the\n")
	p("  same CPU as every thread of the server, because a wake-up across CPUs on\n")
	p("  these VMs adds 40-50 µs and would drown the servers' differences.\n")
	p("- Server CPU: utime+stime of the whole process (all threads) from\n")
	p("  `/proc/PID/stat`, in ticks of 10 ms, so a round spends hundreds of ticks; the\n")
	p("  steadiest figure on a shared VM, since it does not count time spent waiting\n")
	p("  for the CPU.\n")
	p("- Throughput: Go client, one goroutine per connection, on the Go netpoller;\n")
	p("  the client's own CPU use is the same for every server and caps what the\n")
	p("  cheapest servers can show on %d CPUs.\n", m.nproc)
	p("- Ratios are of medians: \"× echo\" to the floor, \"× ssh-agent\" to OpenSSH.\n\n")

	if keep != "" {
		p("%s", keep)
	}
}

func scale(xs []float64, k float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * k
	}
	return out
}
