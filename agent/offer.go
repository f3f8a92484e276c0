package agent

import (
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// offer is what isStepUpRequired offers for a scope that no held token
// serves: the usable methods the scope allows, in order of preference,
// and their credentials. It depends on the policy, the credentials and
// whether each method can be used now. The rule cache (one per policy)
// keeps an offer per scope beside its rule; it is made again when the
// credentials change (credSet.gen) and after offerTTL, so that a method
// becoming usable or not without a change of state the agent sees (a
// fingerprint reader unplugged, the PAM helper installed) shows within a
// second. The offer is shared: its slices are never written after it is
// made.
type offer struct {
	methods       []string
	defaultMethod string
	creds         []api.CredentialRef
	defaultCred   string
	gen           uint64    // credSet.gen it was made at
	made          time.Time // with its monotonic reading
}

// offerTTL bounds how long an offer is used for the methods' own
// availability.
const offerTTL = time.Second

// offerFor returns the offer for scope, a valid scope name whose rule
// was just resolved (a.rule).
func (a *Agent) offerFor(scope string) *offer {
	rc := a.rules.Load()
	gen := a.creds.gen.Load()
	if rc != nil {
		if v, ok := rc.offers.Load(scope); ok {
			if o := v.(*offer); o.gen == gen && time.Since(o.made) < offerTTL {
				return o
			}
		}
	}
	o := &offer{gen: gen, made: time.Now(), methods: a.availableFor(scope)}
	if len(o.methods) > 0 {
		o.defaultMethod = o.methods[0]
		o.creds, o.defaultCred = a.credentialRefs(o.methods)
	}
	// Kept only beside a cached rule of the policy in force: the offers
	// are bounded with the rules, and dropped with them when the policy
	// changes.
	if rc != nil && rc.pol == a.policy() {
		if _, cached := rc.get(scope); cached {
			rc.offers.Store(scope, o)
		}
	}
	return o
}
