package prompt

import (
	"fmt"
	"strings"
	"time"
)

// cleanText makes text safe to show in any driver: it keeps line feeds and
// drops the other control characters (C0, DEL, C1), which a terminal would
// obey (an ESC sequence in a client's reason could repaint the prompt or
// the terminal), and the Unicode bidirectional overrides, which could make
// one scope read as another.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
		case r == '\t':
			r = ' '
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			continue
		case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
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
