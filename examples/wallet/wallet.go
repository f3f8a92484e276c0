// Package wallet is the example wallet service behind examples/walletd: a
// toy HTTP API whose sensitive endpoints demand elevated tokens from
// stepup-agent through stephttp.Require.
//
//	GET  /balance            no step-up; the wallets' addresses and balances
//	POST /sign               wallet:sign, multi-use, verified offline against the agent's JWKS
//	                         (online when Config.OnlineSign: a service other users can reach);
//	                         signs with the first wallet
//	POST /export/{address}   wallet:export, single-use, verified online and consumed, for
//	                         this address only: the token must carry the authorization
//	                         details [{"type":"wallet_export","address":ADDRESS}]
//
// The service holds two wallets, so that a token approved for exporting
// one is seen refused for the other. Their keys are made up at start and
// are not real wallets'.
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

// Wallets is how many wallets the service holds.
const Wallets = 2

// ExportDetails are the authorization details (RFC 9396) of exporting the
// wallet at address: what walletctl steps up with, what the prompt shows
// under "Approve:", and what the export handler requires the token to
// carry.
func ExportDetails(address string) []map[string]any {
	return []map[string]any{{"type": "wallet_export", "address": address}}
}

type account struct {
	address string
	key     ed25519.PrivateKey
}

// NewServer returns the service's handler.
func NewServer(c Config) http.Handler {
	var wallets []account
	for i := 0; i < Wallets; i++ {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		pub := key.Public().(ed25519.PublicKey)
		wallets = append(wallets, account{address: "0x" + hex.EncodeToString(pub[:20]), key: key})
	}
	find := func(address string) *account {
		for i := range wallets {
			if wallets[i].address == address {
				return &wallets[i]
			}
		}
		return nil
	}
	// docs:begin middleware
	// wallet:sign is multi-use: verified offline against the agent's JWKS,
	// or online (revocation seen at once) when other users can connect.
	sign := stephttp.Require("wallet:sign", stephttp.Options{Client: c.Client, Online: c.OnlineSign, Now: c.Now, Logger: c.Logger})
	// wallet:export is single-use: verified online, and consumed. The
	// handler states what it is about to do, exporting this address: a
	// token approved for another address, or for none, is refused.
	export := stephttp.RequireDetails("wallet:export", stephttp.Options{Client: c.Client, Online: true, Now: c.Now, Logger: c.Logger},
		func(r *http.Request) (any, error) { return ExportDetails(r.PathValue("address")), nil })
	// docs:end middleware

	mux := http.NewServeMux()
	mux.HandleFunc("GET /balance", func(w http.ResponseWriter, r *http.Request) {
		var list []map[string]string
		for _, a := range wallets {
			list = append(list, map[string]string{"address": a.address, "balance": "1.5 ETH"})
		}
		reply(w, map[string]any{"address": wallets[0].address, "balance": "1.5 ETH", "wallets": list})
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
			"signature":  "0x" + hex.EncodeToString(ed25519.Sign(wallets[0].key, []byte(req.Message))),
			"approvedBy": claims.Subject, "amr": claims.AMR,
		})
	})))
	mux.HandleFunc("POST /export", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "name the wallet to export: POST /export/ADDRESS (GET /balance lists them)", http.StatusNotFound)
	})
	exportHandler := export(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := stephttp.ClaimsFromContext(r.Context()) // who stepped up, how, when, for what
		a := find(r.PathValue("address"))
		reply(w, map[string]any{"address": a.address, "privateKey": "0x" + hex.EncodeToString(a.key.Seed()), "approvedBy": claims.Subject})
	}))
	mux.Handle("POST /export/{address}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An unknown address is answered before the token is looked at,
		// so a single-use token is not consumed for nothing.
		if find(r.PathValue("address")) == nil {
			http.Error(w, "no wallet "+r.PathValue("address")+" here (GET /balance lists them)", http.StatusNotFound)
			return
		}
		exportHandler.ServeHTTP(w, r)
	}))
	return mux
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
