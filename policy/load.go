package policy

import (
	"errors"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// Parse parses and validates a policy file's contents. Errors name the
// line and the key. (Placeholder: replaced by the full validator.)
func Parse(data []byte) (*Policy, error) {
	p := &Policy{}
	if err := yaml.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p.fill()
	return p, nil
}

// Load reads the policy at path. A missing file gives the built-in
// defaults and exists=false.
func Load(path string) (p *Policy, exists bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Default(), false, nil
	}
	if err != nil {
		return nil, true, err
	}
	p, err = Parse(data)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", path, err)
	}
	return p, true, nil
}
