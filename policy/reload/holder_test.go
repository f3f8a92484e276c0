package reload

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/stepup-agent/stepup-agent/policy"
)

func TestHolder(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := policy.Default()
	good.AllowReauthWithMfa = true
	tests := []struct {
		name     string
		loads    []func(h *Holder)
		wantGood bool
		wantErr  bool
		builtin  bool
	}{
		{name: "nothing loaded: defaults", builtin: false},
		{name: "a good file", loads: []func(*Holder){func(h *Holder) { h.Apply(good, true, nil) }}, wantGood: true},
		{name: "no file", loads: []func(*Holder){func(h *Holder) { h.Apply(policy.Default(), false, nil) }}, builtin: true},
		{name: "a broken file keeps the last good one", loads: []func(*Holder){
			func(h *Holder) { h.Apply(good, true, nil) },
			func(h *Holder) { h.Apply(nil, true, errors.New("line 3: ttl: bad")) },
		}, wantGood: true, wantErr: true},
		{name: "fixed again", loads: []func(*Holder){
			func(h *Holder) { h.Apply(nil, true, errors.New("bad")) },
			func(h *Holder) { h.Apply(good, true, nil) },
		}, wantGood: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHolder("/p.yaml", zap.NewNop(), func() time.Time { return now })
			var seen []*policy.Policy
			h.OnApply(func(p *policy.Policy) { seen = append(seen, p) })
			for _, l := range tt.loads {
				l(h)
			}
			if (h.Get() == good) != tt.wantGood {
				t.Fatalf("policy in force is the good one: %v", !tt.wantGood)
			}
			st := h.Status()
			if (st.Error != "") != tt.wantErr || st.Path != "/p.yaml" || st.Builtin != tt.builtin {
				t.Fatalf("status %+v", st)
			}
			if seen[len(seen)-1] != h.Get() {
				t.Fatal("OnApply did not see the policy in force")
			}
		})
	}
}
