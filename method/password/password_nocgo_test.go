//go:build !cgo

package password

import (
	"testing"

	"github.com/stepup-agent/stepup-agent/method"
)

func TestLeftOutWithoutCgo(t *testing.T) {
	if New(method.Deps{}, Config{}) != nil || Available || Unavailable == "" {
		t.Fatal("a build without cgo must leave the password method out and say why")
	}
}
