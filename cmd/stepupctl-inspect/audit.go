package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/internal/ctl"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// exitBroken: audit verify found the chain broken (DESIGN.md's exit
// codes, internal/ctl/exit.go: 1, as for a check that needs step-up).
const exitBroken = ctl.ExitRequired

type auditFilter struct {
	since  string
	events []string
	scopes []string
	file   string
	follow bool

	sinceT time.Time
}

func (a *app) auditCmd() *cobra.Command {
	var f auditFilter
	cmd := &cobra.Command{
		Use:   "audit",
		Short: short("audit"),
		Long: `audit prints the agent's audit log as a table (time, event, caller, scopes,
method, result), oldest first, across rotated files. --json prints the
records as they are in the log, one per line.

  stepupctl audit --since 1h --event stepup
  stepupctl audit --scope 'wallet:*' --follow
  stepupctl audit verify            # check the chain against the agent's head

The log is the agent's (auditHead names it), or --file.`,
		Args: ctl.ExactArgs(0, "no arguments (did you mean `audit verify`?)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.parse(); err != nil {
				return ctl.UsageError{Err: err, Cmd: cmd.CommandPath()}
			}
			return a.auditShow(cmd.Context(), &f)
		},
	}
	cmd.Flags().StringVar(&f.since, "since", "", "only records since `WHEN`: a duration (30m, 24h) or a time (2026-12-01, RFC 3339)")
	cmd.Flags().StringSliceVar(&f.events, "event", nil, "only these `EVENT`s (stepup, verification, lockout, prompt_refused, ...); repeat or comma-separate")
	cmd.Flags().StringSliceVar(&f.scopes, "scope", nil, "only records naming `SCOPE` (a trailing * matches a prefix)")
	cmd.Flags().StringVar(&f.file, "file", "", "read this log `FILE` instead of the agent's")
	cmd.Flags().BoolVar(&f.follow, "follow", false, "keep printing new records as they come (Ctrl-C ends)")
	cmd.AddCommand(a.auditVerifyCmd())
	return cmd
}

func (f *auditFilter) parse() error {
	if f.since != "" {
		if d, err := time.ParseDuration(f.since); err == nil {
			f.sinceT = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, f.since); err == nil {
			f.sinceT = t
		} else if t, err := time.ParseInLocation(time.DateOnly, f.since, time.Local); err == nil {
			f.sinceT = t
		} else {
			return fmt.Errorf("--since %q is neither a duration (30m, 24h) nor a time (2026-12-01, 2026-12-01T10:00:00Z)", f.since)
		}
	}
	return nil
}

func (f *auditFilter) match(r *audit.Record) bool {
	if r == nil {
		return false
	}
	if !f.sinceT.IsZero() && r.Time.Before(f.sinceT) {
		return false
	}
	if len(f.events) > 0 && !contains(f.events, r.Event) {
		return false
	}
	if len(f.scopes) > 0 {
		ok := false
		for _, want := range f.scopes {
			for _, s := range r.Scopes {
				if s == want || strings.HasSuffix(want, "*") && strings.HasPrefix(s, strings.TrimSuffix(want, "*")) {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// logPath is the log the agent writes (auditHead), else the default.
func (a *app) logPath(ctx context.Context, file string) string {
	if file != "" {
		return file
	}
	var h api.AuditHead
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := a.Client.Call(cctx, api.MethodAuditHead, struct{}{}, &h); err == nil && h.File != "" {
		return h.File
	}
	return audit.DefaultPath()
}

func (a *app) auditShow(ctx context.Context, f *auditFilter) error {
	path := a.logPath(ctx, f.file)
	files, err := audit.SetFiles(path)
	if err != nil {
		return err
	}
	if len(files) == 0 && !f.follow {
		return fmt.Errorf("no audit log at %s (the agent writes it there; another one: --file FILE)", path)
	}
	out := newAuditPrinter(a.Stdout, a.JSON)
	for _, name := range files {
		if err := audit.ReadRecords(name, func(raw []byte, r *audit.Record) error {
			if f.match(r) {
				out.print(raw, r)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	out.flush()
	if !f.follow {
		return nil
	}
	return a.auditFollow(ctx, path, f, out)
}

// auditFollow prints records appended to path until ctx ends, following
// the log across rotation.
func (a *app) auditFollow(ctx context.Context, path string, f *auditFilter, out *auditPrinter) error {
	var (
		fh  *os.File
		br  *bufio.Reader
		ino uint64
	)
	reopen := func(atEnd bool) {
		nf, err := os.Open(path)
		if err != nil {
			return
		}
		st, _ := nf.Stat()
		if atEnd {
			nf.Seek(0, io.SeekEnd)
		}
		if fh != nil {
			fh.Close()
		}
		fh, br = nf, bufio.NewReader(nf)
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			ino = s.Ino
		}
	}
	reopen(true)
	defer func() {
		if fh != nil {
			fh.Close()
		}
	}()
	var partial []byte
	drain := func() {
		for br != nil {
			b, err := br.ReadBytes('\n')
			partial = append(partial, b...)
			if err != nil {
				return
			}
			raw := partial[:len(partial)-1]
			var r audit.Record
			if json.Unmarshal(raw, &r) == nil && f.match(&r) {
				out.print(raw, &r)
				out.flush()
			}
			partial = nil
		}
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		drain()
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if s, ok := st.Sys().(*syscall.Stat_t); ok && (fh == nil || s.Ino != ino) {
			drain() // the rest of the rotated file
			partial = nil
			reopen(false)
			drain()
		}
	}
}

type auditPrinter struct {
	json bool
	w    io.Writer
	tw   *tabwriter.Writer
	head bool
}

func newAuditPrinter(w io.Writer, asJSON bool) *auditPrinter {
	return &auditPrinter{json: asJSON, w: w, tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (p *auditPrinter) print(raw []byte, r *audit.Record) {
	if p.json {
		fmt.Fprintf(p.w, "%s\n", raw)
		return
	}
	if !p.head {
		fmt.Fprintln(p.tw, "TIME\tEVENT\tCALLER\tSCOPES\tMETHOD\tRESULT")
		p.head = true
	}
	fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Local().Format(time.DateTime), r.Event, callerOf(r),
		dash(strings.Join(r.Scopes, " ")), dash(r.Method), dash(resultText(r)))
}

func (p *auditPrinter) flush() { p.tw.Flush() }

func callerOf(r *audit.Record) string {
	c := r.Caller
	if c == "" && r.Exe != "" {
		c = filepath.Base(r.Exe)
	}
	if r.PID > 0 && !strings.Contains(c, "(pid ") {
		c = strings.TrimSpace(c + " (pid " + strconv.Itoa(r.PID) + ")")
	}
	if r.Remote != "" {
		c += " via " + r.Remote
	}
	return dash(c)
}

func resultText(r *audit.Record) string {
	s := r.Result
	if r.RetryAfter > 0 {
		s += fmt.Sprintf(" (%ds)", r.RetryAfter)
	}
	if r.Revoked > 0 {
		s += fmt.Sprintf(" (%d revoked)", r.Revoked)
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) auditVerifyCmd() *cobra.Command {
	var jwksFile, head string
	cmd := &cobra.Command{
		Use:   "verify [FILE...]",
		Short: "Check the audit log's chain and every checkpoint signature; exit 1 when broken",
		Long: `verify checks that every record chains to the one before it (seq, prev) and
that every checkpoint's signature verifies. It names the first bad seq.

Without FILEs it checks the agent's live log (rotated files included)
against the agent's head (auditHead): a cut tail or an older copy shows.
With FILEs it works offline; give them in any order, rotated ones
(.gz too) included. Checkpoints are checked with --jwks FILE (the output
of stepupctl jwks --json), else the running agent's keys. --head SEQ:HASH
checks the files against a receipt of auditHead kept elsewhere.

Exit: 0 intact, 1 broken, 2 bad arguments, 5 no agent (without FILEs).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.auditVerify(cmd, args, jwksFile, head)
		},
	}
	cmd.Flags().StringVar(&jwksFile, "jwks", "", "the agent's key set (`FILE`, as `stepupctl jwks --json` prints it)")
	cmd.Flags().StringVar(&head, "head", "", "a receipt the log must reach: `SEQ:HASH` (auditHead's seq and hash)")
	return cmd
}

func (a *app) auditVerify(cmd *cobra.Command, files []string, jwksFile, headArg string) error {
	ctx := cmd.Context()
	var o audit.VerifyOptions
	if jwksFile != "" {
		b, err := os.ReadFile(jwksFile)
		if err != nil {
			return ctl.UsageError{Err: fmt.Errorf("--jwks: %v", err), Cmd: cmd.CommandPath()}
		}
		var ks jose.JSONWebKeySet
		if err := json.Unmarshal(b, &ks); err != nil || len(ks.Keys) == 0 {
			return ctl.UsageError{Err: fmt.Errorf("--jwks %s is not a JWK Set (save `stepupctl jwks --json` to it)", jwksFile), Cmd: cmd.CommandPath()}
		}
		o.JWKS = &ks
	}
	if headArg != "" {
		seq, hash, ok := strings.Cut(headArg, ":")
		n, err := strconv.ParseInt(seq, 10, 64)
		if !ok || err != nil || n < 0 || len(hash) != 64 {
			return ctl.UsageError{Err: fmt.Errorf("--head %q is not SEQ:HASH (auditHead's seq, a colon, its 64 hex digit hash)", headArg), Cmd: cmd.CommandPath()}
		}
		o.Head = &audit.Head{Seq: n, Hash: strings.ToLower(hash)}
	}
	if len(files) == 0 {
		var h api.AuditHead
		if err := a.Client.Call(ctx, api.MethodAuditHead, struct{}{}, &h); err != nil {
			return a.agentFailed(err)
		}
		if o.Head == nil {
			o.Head = &audit.Head{Seq: h.Seq, Hash: h.Hash}
		}
		var err error
		if files, err = audit.SetFiles(h.File); err != nil {
			return err
		}
		if o.JWKS == nil {
			ks, err := a.agentJWKS(ctx)
			if err != nil {
				return a.agentFailed(err)
			}
			o.JWKS = ks
		}
	} else {
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				return ctl.UsageError{Err: err, Cmd: cmd.CommandPath()}
			}
		}
		files = sortBySeq(files)
		if o.JWKS == nil {
			o.JWKS, _ = a.agentJWKS(ctx) // best effort: offline leaves them unchecked
		}
	}
	rep, err := audit.Verify(files, o)
	if err != nil {
		return err
	}
	if a.JSON {
		if err := a.PrintJSON(rep); err != nil {
			return err
		}
	} else if rep.Problem == nil {
		fmt.Fprintf(a.Stdout, "intact: %d records, seq %d to %d, %d files, %d checkpoints", rep.Records, rep.First, rep.Last.Seq, len(files), rep.Checkpoints)
		if rep.Unchecked > 0 {
			fmt.Fprintf(a.Stdout, " (%d signatures NOT checked: give --jwks FILE)", rep.Unchecked)
		}
		fmt.Fprintln(a.Stdout)
		if o.Head != nil {
			fmt.Fprintf(a.Stdout, "reaches head seq %d (%s)\n", o.Head.Seq, o.Head.Hash)
		}
	}
	if rep.Problem != nil {
		if !a.JSON {
			fmt.Fprintf(a.Stdout, "BROKEN at seq %d: %s\n", rep.Problem.Seq, rep.Problem.Reason)
			if rep.Problem.File != "" {
				fmt.Fprintf(a.Stdout, "  in %s, line %d\n", rep.Problem.File, rep.Problem.Line)
			}
		}
		return ctl.ExitCode(exitBroken)
	}
	return nil
}

// sortBySeq orders files by their first record (unreadable ones first,
// so that their problem is the one reported).
func sortBySeq(files []string) []string {
	first := map[string]int64{}
	for _, f := range files {
		first[f], _ = audit.FirstSeq(f)
	}
	out := append([]string(nil), files...)
	sort.SliceStable(out, func(i, j int) bool { return first[out[i]] < first[out[j]] })
	return out
}

func (a *app) agentJWKS(ctx context.Context) (*jose.JSONWebKeySet, error) {
	b, err := a.Client.JWKS(ctx)
	if err != nil {
		return nil, err
	}
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, err
	}
	return &ks, nil
}

// agentFailed reports a failed call and exits 5 when there is no agent.
func (a *app) agentFailed(err error) error {
	var de *stepup.DialError
	var ae *api.Error
	if errors.As(err, &de) || errors.As(err, &ae) && ae.Code == api.CodeInternal {
		a.PrintError(err)
		return ctl.ExitCode(ctl.ExitNoAgent)
	}
	if errors.As(err, &ae) && ae.Code == api.CodeMethodNotFound {
		fmt.Fprintln(a.Stderr, "stepupctl: this agent has no auditHead (an older version); check the files offline: stepupctl audit verify FILE... --jwks FILE")
		return ctl.ExitCode(ctl.ExitNoAgent)
	}
	return err
}
