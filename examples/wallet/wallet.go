// Package wallet is the example wallet service behind examples/walletd: a
// toy HTTP API whose sensitive endpoints demand elevated tokens from
// stepup-agent through stephttp.Require.
//
//	GET  /balance   no step-up
//	POST /sign      wallet:sign, multi-use, verified offline against the agent's JWKS
//	                (online when Config.OnlineSign: a service other users can reach)
//	POST /export    wallet:export, single-use, verified online and consumed
//
// The key is made up at start and is not a real wallet's.
package wallet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
	"go.uber.org/zap"
)

// Config configures the service.
type Config struct {
	// Client is the local agent that verifies tokens.
	Client *stepup.Client
	// Now is the verifiers' clock; nil means time.Now.
	Now func() time.Time
	// Logger logs refusals; nil means none.
	Logger *zap.Logger
	// OnlineSign verifies wallet:sign online too, so that a token
	// revoked by stepupctl reset or lock stops working at once. walletd
	// sets it when it listens on TCP, where other local users reach it.
	OnlineSign bool
}

// NewServer returns the service's handler.
func NewServer(c Config) http.Handler {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	// docs:begin middleware
	// wallet:sign is multi-use: verified offline against the agent's JWKS,
	// or online (revocation seen at once) when other users can connect.
	sign := stephttp.Require("wallet:sign", stephttp.Options{Client: c.Client, Online: c.OnlineSign, Now: c.Now, Logger: c.Logger})
	// wallet:export is single-use: verified online, and consumed.
	export := stephttp.Require("wallet:export", stephttp.Options{Client: c.Client, Online: true, Now: c.Now, Logger: c.Logger})
	// docs:end middleware

	mux := http.NewServeMux()
	mux.HandleFunc("GET /balance", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"address": "0x" + hex.EncodeToString(pub[:20]), "balance": "1.5 ETH"})
	})
	mux.Handle("POST /sign", sign(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Message string `json:"message"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Message == "" {
			http.Error(w, `want {"message": "..."}`, http.StatusBadRequest)
			return
		}
		claims, _ := stephttp.ClaimsFromContext(r.Context())
		reply(w, map[string]any{
			"signature":  "0x" + hex.EncodeToString(ed25519.Sign(key, []byte(req.Message))),
			"approvedBy": claims.Subject, "amr": claims.AMR,
		})
	})))
	mux.Handle("POST /export", export(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := stephttp.ClaimsFromContext(r.Context()) // who stepped up, how, when
		reply(w, map[string]any{"privateKey": "0x" + hex.EncodeToString(key.Seed()), "approvedBy": claims.Subject})
	})))
	return mux
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
