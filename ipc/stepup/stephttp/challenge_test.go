package stephttp

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   *Challenge
	}{
		{"RFC 9470 figure 1", []string{`Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR"`},
			&Challenge{Error: ErrorInsufficientUserAuthentication, Description: "A different authentication level is required", ACRValues: []string{"myACR"}}},
		{"RFC 9470 figure 2", []string{`Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age="5"`},
			&Challenge{Error: ErrorInsufficientUserAuthentication, Description: "More recent authentication is required", MaxAge: 5 * time.Second, HasMaxAge: true}},
		{"scope and bare max_age", []string{`Bearer error="insufficient_user_authentication", scope="wallet:export wallet:sign", max_age=0`},
			&Challenge{Error: ErrorInsufficientUserAuthentication, Scopes: []string{"wallet:export", "wallet:sign"}, HasMaxAge: true}},
		{"after another scheme", []string{`Basic realm="x", Bearer realm="api", error="invalid_token"`},
			&Challenge{Error: ErrorInvalidToken}},
		{"second header", []string{`Basic realm="x"`, `bearer error=insufficient_user_authentication,scope="a:b"`},
			&Challenge{Error: ErrorInsufficientUserAuthentication, Scopes: []string{"a:b"}}},
		{"quoted pairs", []string{`Bearer error_description="say \"hi\" \\ bye", error="invalid_token"`},
			&Challenge{Error: ErrorInvalidToken, Description: `say "hi" \ bye`}},
		{"token68 first", []string{`Negotiate abc==, Bearer error="invalid_token"`}, &Challenge{Error: ErrorInvalidToken}},
		{"bad max_age ignored", []string{`Bearer error="insufficient_user_authentication", max_age="-3"`},
			&Challenge{Error: ErrorInsufficientUserAuthentication}},
		{"none", []string{`Basic realm="x"`}, nil},
		{"garbage", []string{`"""`, `=,=`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("WWW-Authenticate", v)
			}
			got := ParseChallenge(h)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseChallenge(%q) = %+v, want %+v", tt.values, got, tt.want)
			}
		})
	}
}

func TestChallengeRoundTrip(t *testing.T) {
	c := &Challenge{Error: ErrorInsufficientUserAuthentication, Description: `a "quoted" \ thing é`,
		Scopes: []string{"wallet:export"}, ACRValues: []string{"phr"}, MaxAge: 90 * time.Second, HasMaxAge: true}
	s := c.String()
	want := `Bearer error="insufficient_user_authentication", error_description="a 'quoted' ' thing ?", scope="wallet:export", acr_values="phr", max_age=90`
	if s != want {
		t.Fatalf("String() = %s\nwant        %s", s, want)
	}
	h := http.Header{"Www-Authenticate": {s}}
	got := ParseChallenge(h)
	c.Description = "a 'quoted' ' thing ?"
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("parsed %+v, want %+v", got, c)
	}
}
