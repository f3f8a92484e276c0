package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
)

// detailFlags name the action a token is for (authorizationDetails, RFC
// 9396): --detail KEY=VALUE builds one entry (type= first), and
// --details-json gives the whole array.
type detailFlags struct {
	pairs []string
	json  string
}

func (d *detailFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&d.pairs, "detail", nil, "a field of the action the token is for, KEY=VALUE; the first is type=..., e.g. --detail type=wallet_export --detail address=0x12ab (authorizationDetails)")
	cmd.Flags().StringVar(&d.json, "details-json", "", `the action's authorizationDetails as a JSON array, e.g. '[{"type":"wallet_export","address":"0x12ab"}]'`)
}

// raw returns the details for the wire (nil: none), checked as the agent
// checks them, so that a mistake is named in the flags' words.
func (d *detailFlags) raw() (api.RawDetails, error) {
	if len(d.pairs) > 0 && d.json != "" {
		return nil, UsageError{errors.New("--detail and --details-json cannot be used together"), "stepupctl prompt"}
	}
	var raw api.RawDetails
	switch {
	case d.json != "":
		raw = api.RawDetails(strings.TrimSpace(d.json))
	case len(d.pairs) > 0:
		var b bytes.Buffer
		b.WriteString("[{")
		for i, p := range d.pairs {
			k, v, ok := strings.Cut(p, "=")
			if !ok || k == "" {
				return nil, UsageError{errors.New("--detail " + p + ": want KEY=VALUE, e.g. --detail address=0x12ab"), "stepupctl prompt"}
			}
			if i == 0 && k != "type" {
				return nil, UsageError{errors.New("the first --detail must be type=..., e.g. --detail type=wallet_export"), "stepupctl prompt"}
			}
			if i > 0 {
				b.WriteByte(',')
			}
			kj, _ := json.Marshal(k)
			vj, _ := json.Marshal(v)
			b.Write(kj)
			b.WriteByte(':')
			b.Write(vj)
		}
		b.WriteString("}]")
		raw = api.RawDetails(b.Bytes())
	default:
		return nil, nil
	}
	if _, err := api.ParseDetails(raw); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, UsageError{errors.New("--detail/--details-json: " + ae.Message), "stepupctl prompt"}
		}
		return nil, err
	}
	return raw, nil
}
