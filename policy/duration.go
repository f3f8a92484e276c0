package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as Go duration text in YAML: "90s",
// "2m", "1h30m". A bare number is refused, since "120" could mean seconds
// or minutes.
//
// In JSON (the status method, stepupctl status --json) a Duration is the
// same text as time.Duration.String gives, "2m0s"; UnmarshalJSON accepts
// that text or a number of seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String returns d as time.Duration.String does ("2m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// durationHint ends every "is not a duration" error.
const durationHint = "(use 90s, 2m, 1h)"

// parseDuration parses s as Go duration text.
func parseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration %s", s, durationHint)
	}
	return Duration(d), nil
}

// UnmarshalYAML implements yaml.Unmarshaler for code that decodes a
// Duration with yaml.Unmarshal. Parse does not go through it: it reads
// the node tree itself to name lines and keys in its errors.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string like 90s, 2m, 1h", n.Line)
	}
	if n.ShortTag() == "!!null" {
		*d = 0
		return nil
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes d as duration text.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes d as duration text, "2m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads duration text ("2m0s") or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := parseDuration(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < -9e9 || f > 9e9 {
		return fmt.Errorf("%s is not a duration: use a string like \"2m0s\" or a number of seconds", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}
