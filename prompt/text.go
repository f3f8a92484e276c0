package prompt

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// cleanText makes text safe to show in any driver. It keeps line feeds
// and turns tabs into spaces; it drops every other control character (C0,
// DEL, C1: a terminal would obey an ESC sequence in a client's reason and
// repaint the prompt) and every format character (Unicode category Cf:
// the bidirectional overrides and isolates that make one scope read as
// another, zero-width spaces and joiners that hide or split text, soft
// hyphens, tag characters); and it turns the Unicode line and paragraph
// separators (Zl, Zp), which GUI toolkits break lines at, into spaces, so
// that a client cannot start a line of its own in the prompt. Invalid
// UTF-8 becomes U+FFFD.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
		case r == '\t':
			r = ' '
		case unicode.In(r, unicode.Zl, unicode.Zp):
			r = ' '
		case unicode.In(r, unicode.Cc, unicode.Cf):
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// shown is a Request as the drivers show it: text cleaned, defaults filled
// in, and the time left named in the description.
type shown struct {
	title, desc, prompt, errText, ok, cancel string
	timeout                                  time.Duration
}

// defaultTimeout applies when a Request has none.
const defaultTimeout = 60 * time.Second

func render(req Request) shown {
	s := shown{
		title:   cleanText(req.Title),
		desc:    strings.TrimRight(cleanText(req.Description), "\n"),
		prompt:  cleanText(req.Prompt),
		errText: cleanText(req.Error),
		ok:      cleanText(req.OK),
		cancel:  cleanText(req.Cancel),
		timeout: req.Timeout,
	}
	if s.title == "" {
		s.title = "stepup-agent"
	}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	if s.desc != "" {
		s.desc += "\n"
	}
	s.desc += "This prompt closes in " + humanDuration(s.timeout) + "."
	return s
}

// timeoutSeconds is the whole seconds a prompt program gets, at least 1.
func timeoutSeconds(d time.Duration) int {
	n := int((d + time.Second - 1) / time.Second)
	if n < 1 {
		n = 1
	}
	return n
}

func humanDuration(d time.Duration) string {
	n := timeoutSeconds(d)
	switch {
	case n < 60:
		return fmt.Sprintf("%d s", n)
	case n%60 == 0:
		return fmt.Sprintf("%d min", n/60)
	default:
		return fmt.Sprintf("%d min %d s", n/60, n%60)
	}
}
