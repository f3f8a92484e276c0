package agent

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/prompt"
	"go.uber.org/zap"
)

// The factors a prompt offers: in the order of the policy's prompt.order,
// and, unless prompt.combine is false, every armed factor (a fingerprint
// reader) beside one typed code in one prompt, the first success winning
// (docs/prompts.md, "Several factors at once").

// factors are the methods one prompt may offer, in order of preference.
type factors struct {
	ordered []string // every usable method, preferred first
	typed   string   // combined: the typed-code method
	armed   []string // combined: the armed methods beside it
}

func (f factors) combined() bool { return f.typed != "" && len(f.armed) > 0 }

// promptFactors lists what a prompt for p may offer. A request that names
// its method gets that method alone (nil).
func (a *Agent) promptFactors(rt route, p *api.PromptParams, unlock bool) *factors {
	if p.Method != "" {
		return nil
	}
	var scopes []string
	if !unlock {
		scopes = p.RequestedScopes
	}
	avail, err := a.available(rt, scopes)
	if err != nil || len(avail) == 0 {
		return nil // begin says why
	}
	pol := a.policy().Prompt
	f := &factors{ordered: orderBy(avail, pol.Order)}
	if !pol.Combines() {
		return f
	}
	for _, m := range f.ordered {
		impl := a.methods.get(m)
		if ar, ok := impl.(method.Armed); ok && ar.Armed() {
			f.armed = append(f.armed, m)
		} else if _, waits := impl.(method.Waiter); !waits && f.typed == "" && api.IsMFA(m) {
			f.typed = m
		}
	}
	return f
}

// orderBy puts the methods order names first, in its order; the others
// keep theirs.
func orderBy(ms, order []string) []string {
	out := make([]string, 0, len(ms))
	for _, m := range order {
		if slices.Contains(ms, m) && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	for _, m := range ms {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// beginPreferred starts the prompt's verification: the named method, or
// the first of the preferred ones that starts. A factor that cannot start
// now (fprintd refused by polkit, the reader busy) is logged and the next
// one is tried, so the user is still asked.
func (a *Agent) beginPreferred(ctx context.Context, rt route, p *api.PromptParams, unlock bool, f *factors) (*challenge, error) {
	if f == nil || len(f.ordered) == 0 {
		c, err := a.beginFor(ctx, rt, p.Method, p, unlock)
		return c, err
	}
	var first error
	for _, m := range f.ordered {
		c, err := a.beginFor(ctx, rt, m, p, unlock)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
		a.log.Warn("a factor cannot start; offering the next", zap.String("method", m), zap.Error(err))
	}
	return nil, first
}

// notCombined is promptCombined's answer when the typed factor cannot
// start: the prompt goes on without it.
type notCombined struct{ err error }

func (e *notCombined) Error() string { return e.err.Error() }
func (e *notCombined) Unwrap() error { return e.err }

// withoutTyped is f after its typed factor could not start.
func (f *factors) withoutTyped() *factors {
	out := &factors{}
	for _, m := range f.ordered {
		if m != f.typed {
			out.ordered = append(out.ordered, m)
		}
	}
	return out
}

// errLost is a factor's answer after another factor has won.
var errLost = errors.New("another factor answered first")

// promptCombined runs one prompt that reads a code (f.typed) while the
// armed factors verify by themselves. The first success mints (its amr is
// that factor's) and ends the others: the pinentry is dismissed, the
// reader's verification stopped. A failure of one does not end the
// others: a wrong code asks again while the reader stays armed, a
// no-match re-arms the reader while the code prompt stays up. Each
// failure counts against its own method's limit.
func (a *Agent) promptCombined(ctx context.Context, pr prompt.Prompter, deadline time.Time, rt route, p *api.PromptParams, unlock bool, f *factors) (*api.TokenResult, error) {
	typed, err := a.beginFor(ctx, rt, f.typed, p, unlock)
	if err != nil {
		// The code cannot be asked for (its method locked out): the
		// other factors are still offered, one at a time.
		a.log.Info("the typed factor cannot start; offering the others", zap.String("method", f.typed), zap.Error(err))
		return nil, &notCombined{err}
	}

	// Arm the others now, so that the prompt names only what runs.
	actx, disarm := context.WithCancel(method.WithPromptEnv(ctx, p.Env()))
	var wg sync.WaitGroup
	defer func() { disarm(); wg.Wait() }() // the reader is released before we answer

	var (
		mu     sync.Mutex // one finish at a time; the first success wins
		won    bool
		result *api.TokenResult
	)
	pctx, dismiss := context.WithCancel(ctx)
	defer dismiss()
	finishOnce := func(c *challenge, resp json.RawMessage) (*api.TokenResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if won {
			return nil, errLost
		}
		res, err := a.finish(ctx, c, resp)
		if err == nil {
			won, result = true, res
		}
		return res, err
	}

	// What an armed factor reports while it runs ("touch the reader
	// again") is shown by asking again with it as the prompt's error
	// line.
	notes := newNotices()

	var armedNames, phrases []string
	for _, m := range f.armed {
		c, err := a.beginFor(ctx, rt, m, p, unlock)
		if err != nil {
			a.log.Warn("an armed factor cannot start; the prompt offers the others", zap.String("method", m), zap.Error(err))
			continue
		}
		impl := a.methods.get(m).(method.Armed)
		armedNames = append(armedNames, m)
		phrases = append(phrases, strings.TrimSuffix(impl.Ask(c.state).Hint, "."))
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runArmed(actx, rt, p, unlock, impl, c, finishOnce, dismiss, notes.post)
		}()
	}

	impl := a.methods.get(f.typed)
	ask := impl.Ask(typed.state)
	names := append(slices.Clone(armedNames), f.typed)
	text := ask.Hint
	if len(phrases) > 0 {
		text = strings.Join(phrases, ", or ") + ", or " + lowerFirst(ask.Hint)
	}
	shown := *typed
	shown.method = strings.Join(names, " or ")
	desc, err := a.describe(ctx, &shown, p, method.Ask{Hint: text, Text: ask.Text})
	if err != nil {
		return nil, err
	}

	lastErr := ""
	for {
		req := promptRequest(p, desc, ask.Label, lastErr, deadline)
		var answer string
		note, err := notes.during(pctx, func(ctx context.Context) (err error) {
			answer, err = pr.GetPIN(ctx, req)
			return err
		})
		mu.Lock()
		w, res := won, result
		mu.Unlock()
		if w {
			return res, nil // an armed factor won and dismissed the prompt
		}
		if err != nil {
			if note != "" && pctx.Err() == nil {
				lastErr = note // shown as the prompt's error line
				continue
			}
			return nil, a.promptEnded(ctx, err, shown.method, typed.scopes)
		}
		resp, _ := json.Marshal(map[string]string{ask.Field: answer})
		res, err = finishOnce(typed, resp)
		if err == nil {
			return res, nil
		}
		if errors.Is(err, errLost) {
			mu.Lock()
			defer mu.Unlock()
			return result, nil
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeVerificationFailed && ae.Data.RetryAfterSeconds > 0 && len(armedNames) > 0 {
			// The code is locked out; the reader may still answer.
			return a.awaitArmed(ctx, pctx, pr, deadline, desc, ae.Message, p.Env(), &wg, func() (bool, *api.TokenResult) {
				mu.Lock()
				defer mu.Unlock()
				return won, result
			}, err)
		}
		if !errors.As(err, &ae) || ae.Code != api.CodeVerificationFailed || ae.Data.RetryAfterSeconds > 0 {
			return nil, err
		}
		lastErr = ae.Message
		a.log.Info("wrong code in the combined prompt; asking again, the other factors stay armed", zap.String("method", f.typed))
		if ss, ok := impl.(method.SingleShot); ok && ss.SingleShot() {
			if typed, err = a.beginFor(ctx, rt, f.typed, p, unlock); err != nil {
				return nil, err
			}
		}
	}
}

// awaitArmed shows a Cancel-only prompt while the armed factors run, after
// the typed one was locked out: a win closes it, as does the last armed
// factor stopping (the answer is then the lockout, lockErr).
func (a *Agent) awaitArmed(ctx, pctx context.Context, pr prompt.Prompter, deadline time.Time, desc, errText string, env api.PromptEnv,
	wg *sync.WaitGroup, winner func() (bool, *api.TokenResult), lockErr error) (*api.TokenResult, error) {
	cctx, closePrompt := context.WithCancel(pctx)
	defer closePrompt()
	go func() { wg.Wait(); closePrompt() }()
	err := pr.Confirm(cctx, prompt.Request{
		Title:       "stepup-agent",
		Description: desc,
		Error:       errText,
		OK:          "Cancel",
		Cancel:      "Cancel",
		Timeout:     time.Until(deadline).Round(time.Second),
		Env:         env,
	})
	if w, res := winner(); w {
		return res, nil
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return nil, prompt.ErrTimeout
	case cctx.Err() != nil && ctx.Err() == nil:
		return nil, lockErr // every armed factor stopped
	case err == nil:
		return nil, prompt.ErrCancelled
	}
	return nil, err
}

// runArmed waits for an armed factor until it wins, ctx ends or it cannot
// go on. A no-match (counted against its limit) and the factor's own
// timeout re-arm it while the prompt is up; a lockout, a refusal or the
// reader going away leave the other factors to the user.
func (a *Agent) runArmed(ctx context.Context, rt route, p *api.PromptParams, unlock bool, impl method.Armed, c *challenge,
	finishOnce func(*challenge, json.RawMessage) (*api.TokenResult, error), dismiss context.CancelFunc, notify func(string)) {
	m := impl.Name()
	for {
		stopWatch := watchProgress(ctx, impl, c.state, notify)
		resp, err := impl.Wait(ctx, c.state)
		stopWatch()
		if ctx.Err() != nil {
			return // another factor won, or the prompt ended: Wait stopped the verification
		}
		if err == nil {
			_, err = finishOnce(c, resp)
			if err == nil {
				dismiss()
				return
			}
		}
		var ae *api.Error
		switch {
		case errors.Is(err, errLost):
			return
		case errors.As(err, &ae) && ae.Code == api.CodeVerificationFailed && ae.Data.RetryAfterSeconds == 0:
			a.log.Info("armed factor failed; re-arming it", zap.String("method", m))
		case errors.Is(err, context.DeadlineExceeded):
			a.log.Info("armed factor timed out; re-arming it", zap.String("method", m))
		default:
			a.log.Warn("armed factor stopped; the prompt offers the others", zap.String("method", m), zap.Error(err))
			return
		}
		if c, err = a.beginFor(ctx, rt, m, p, unlock); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("armed factor cannot re-arm", zap.String("method", m), zap.Error(err))
			}
			return
		}
	}
}

// notices holds the latest message a running method reported
// (method.Progress) until a prompt shows it: a newer one replaces an
// older one not shown yet.
type notices chan string

func newNotices() notices { return make(chan string, 1) }

// post keeps msg as the latest message.
func (n notices) post(msg string) {
	select {
	case <-n:
	default:
	}
	select {
	case n <- msg:
	default:
	}
}

// during runs show (a prompt) with a context that is cancelled when a
// message comes, closing the prompt so that it can be shown again with
// the message. It returns that message ("" if none closed it) and
// show's error.
func (n notices) during(ctx context.Context, show func(context.Context) error) (string, error) {
	sctx, closePrompt := context.WithCancel(ctx)
	defer closePrompt()
	noticed := make(chan string, 1)
	go func() {
		select {
		case msg := <-n:
			noticed <- msg
			closePrompt()
		case <-sctx.Done():
		}
	}()
	err := show(sctx)
	closePrompt()
	select {
	case msg := <-noticed:
		return msg, err
	default:
		return "", err
	}
}

// watchProgress passes what an armed verification reports while it runs
// (method.Progress) to notify, until the returned stop is called.
func watchProgress(ctx context.Context, impl method.Method, state any, notify func(string)) (stop func()) {
	pg, ok := impl.(method.Progress)
	if !ok {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, changed := pg.Progress(state)
		for {
			select {
			case <-changed:
				var msg string
				msg, changed = pg.Progress(state)
				notify(msg)
			case <-wctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
