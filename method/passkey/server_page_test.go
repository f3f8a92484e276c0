package passkey

import (
	"strings"
	"testing"
)

// TestFillEscapes: what the pages carry (the ceremony's options as JSON,
// the launcher's address) cannot leave the attribute or text it is put in.
func TestFillEscapes(t *testing.T) {
	page, err := static.ReadFile("static/page.html")
	if err != nil {
		t.Fatal(err)
	}
	opts := `{"challenge":"x\"><script>alert(1)</script>","rp":{"name":"a&b 'c'"}}`
	out := fill(string(page), "Mode", "get", "Options", opts, "Title", "Confirm <now>")
	if strings.Contains(out, "{{") {
		t.Fatalf("unfilled placeholder in %s", out)
	}
	for _, want := range []string{
		`data-options="{&#34;challenge&#34;:&#34;x\&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#34;,&#34;rp&#34;:{&#34;name&#34;:&#34;a&amp;b &#39;c&#39;&#34;}}"`,
		`data-mode="get"`,
		`<title>Confirm &lt;now&gt;</title>`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %s:\n%s", want, out)
		}
	}
	l := fill(launcherPage, "URL", `http://127.0.0.1:1/p?a=1&b="2"`)
	if !strings.Contains(l, `url=http://127.0.0.1:1/p?a=1&amp;b=&#34;2&#34;">`) || strings.Contains(l, "{{") {
		t.Fatalf("launcher %s", l)
	}
}
