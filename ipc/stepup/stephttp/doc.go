// Package stephttp brings step-up to HTTP, on both sides of a request.
//
// Clients wrap their transport in a Transport: it attaches the agent's
// elevated token to each request that needs one, steps up when the agent
// holds none, and answers a server's RFC 9470 step-up challenge
// (WWW-Authenticate: Bearer error="insufficient_user_authentication",
// scope=..., max_age=...) by stepping up and retrying once:
//
//	hc := &http.Client{Transport: &stephttp.Transport{
//		Scope: func(r *http.Request) string {
//			if r.URL.Path == "/export" {
//				return "wallet:export"
//			}
//			return ""
//		},
//	}}
//	resp, err := hc.Post(url+"/export", "application/json", body)
//	if errors.Is(err, stepup.ErrCancelled) { ... } // the user said no
//
// Services guard their handlers with Require: it reads the token from a
// header (X-Elevated-Token by default), verifies it offline against the
// agent's JWK Set or online with the agent's verifyToken (which consumes
// single-use tokens), and answers a missing or insufficient token with
// the RFC 9470 challenge:
//
//	mux.Handle("POST /sign", stephttp.Require("wallet:sign", stephttp.Options{Client: c})(sign))
//	mux.Handle("POST /export", stephttp.Require("wallet:export", stephttp.Options{Client: c, Online: true})(export))
//
// The package lives under ipc/stepup because it is the Go client's HTTP
// face; it has no dependency beyond the client, the token package and
// net/http. docs/integrating.md shows it beside the Node client and the
// shell recipes.
package stephttp
