package peer

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAdmitsTable(t *testing.T) {
	tty1 := LoginSession{Kind: SessionTTY, ID: 34816, Start: 40}
	tty2 := LoginSession{Kind: SessionTTY, ID: 34817, Start: 41}
	// The same terminal number after it closed and a new login opened it
	// again: another session leader, so another session.
	tty1Reused := LoginSession{Kind: SessionTTY, ID: 34816, Start: 90}
	base := func(pid int, start uint64, exe, script string, s LoginSession, parents ...Proc) *Identity {
		return &Identity{UID: 1000, Proc: Proc{PID: pid, Start: start}, Boot: "b", Executable: exe, Script: script, Session: s, Parents: parents}
	}
	minter := base(100, 10, "/usr/bin/node", "/home/u/a.mjs", tty1, Proc{50, 5})
	same := minter
	reused := base(100, 99, "/usr/bin/node", "/home/u/a.mjs", tty1)
	child := base(101, 11, "/usr/bin/curl", "", tty1, Proc{100, 10}, Proc{50, 5})
	grandchild := base(102, 12, "/usr/bin/sh", "", tty1, Proc{101, 11}, Proc{100, 10})
	sibling := base(103, 13, "/usr/bin/node", "/home/u/a.mjs", tty1, Proc{50, 5})
	otherScript := base(104, 14, "/usr/bin/node", "/home/u/b.mjs", tty1, Proc{50, 5})
	otherExe := base(105, 15, "/usr/bin/python3.11", "/home/u/a.mjs", tty1)
	otherTTY := base(106, 16, "/usr/bin/node", "/home/u/a.mjs", tty2)
	reusedTTY := base(110, 20, "/usr/bin/node", "/home/u/a.mjs", tty1Reused)
	otherUID := base(107, 17, "/usr/bin/node", "/home/u/a.mjs", tty1)
	otherUID.UID = 1001
	otherBoot := base(100, 10, "/usr/bin/node", "/home/u/a.mjs", tty1)
	otherBoot.Boot = "c"
	remote := base(108, 18, "/usr/bin/node", "/home/u/a.mjs", tty1)
	remote.Remote = "ssh host"

	for _, tc := range []struct {
		name                           string
		caller                         *Identity
		process, client, session, user bool
	}{
		{"the minter itself", same, true, true, true, true},
		{"a reused pid", reused, false, true, true, true},
		{"a child of another program", child, true, false, true, true},
		{"a grandchild", grandchild, true, false, true, true},
		{"a sibling running the same script", sibling, false, true, true, true},
		{"another script of the interpreter", otherScript, false, false, true, true},
		{"another executable", otherExe, false, false, true, true},
		{"another terminal", otherTTY, false, false, false, true},
		{"the same terminal number in a later login", reusedTTY, false, false, false, true},
		{"another user", otherUID, false, false, false, false},
		{"another boot", otherBoot, false, false, false, false},
		{"a remote caller", remote, false, false, false, false},
		{"no caller", nil, false, false, false, false},
	} {
		for _, m := range []struct {
			mode Mode
			want bool
		}{{Process, tc.process}, {Client, tc.client}, {Session, tc.session}, {User, tc.user}} {
			if got := m.mode.Admits(minter, tc.caller); got != m.want {
				t.Errorf("%s: %s.Admits = %v, want %v", tc.name, m.mode, got, m.want)
			}
		}
	}
	if Mode("bogus").Admits(minter, same) {
		t.Error("an unknown mode admits")
	}
	if User.Admits(&Identity{}, same) || User.Admits(nil, same) {
		t.Error("a token without a caller (persisted before binding) admits someone")
	}
	// A remote minter's token is seen through its own connection only.
	remote2 := *remote
	remote2.PID, remote2.Start = 109, 19
	if !User.Admits(remote, &remote2) || User.Admits(remote, minter) {
		t.Error("remote tokens cross connections")
	}
	other := remote2
	other.Remote = "ssh other"
	if User.Admits(remote, &other) {
		t.Error("a token of one SSH connection is handed to another")
	}
}

// Where the executable or the session is not known, the wider modes act
// as process.
func TestAdmitsFallsBackToProcess(t *testing.T) {
	noExe := &Identity{UID: 1, Proc: Proc{PID: 10, Start: 1}, Session: LoginSession{Kind: SessionSID, ID: 10, Start: 1}}
	sib := &Identity{UID: 1, Proc: Proc{PID: 11, Start: 2}, Session: noExe.Session}
	kid := &Identity{UID: 1, Proc: Proc{PID: 12, Start: 3}, Session: noExe.Session, Parents: []Proc{noExe.Proc}}
	if Client.Admits(noExe, sib) || !Client.Admits(noExe, kid) {
		t.Error("client without an executable is not process")
	}
	if !Session.Admits(noExe, sib) {
		t.Error("session with a known session refuses its member")
	}
	noSess := &Identity{UID: 1, Proc: Proc{PID: 10, Start: 1}, Executable: "/bin/x"}
	sib2 := &Identity{UID: 1, Proc: Proc{PID: 11, Start: 2}, Executable: "/bin/x"}
	if Session.Admits(noSess, sib2) || Client.Admits(noSess, sib2) {
		t.Error("an unknown session matches another unknown session")
	}
}

func TestAdmitsAll(t *testing.T) {
	tty := LoginSession{Kind: SessionTTY, ID: 1}
	m := &Identity{UID: 1, Proc: Proc{PID: 10, Start: 1}, Executable: "/bin/a", Session: tty}
	kid := &Identity{UID: 1, Proc: Proc{PID: 11, Start: 2}, Executable: "/bin/b", Session: tty, Parents: []Proc{m.Proc}}
	if !AdmitsAll([]Mode{Process, User}, m, kid) {
		t.Error("process+user refuses a descendant")
	}
	if AdmitsAll([]Mode{Process, Client}, m, kid) {
		t.Error("process+client admits a descendant of another executable: client refuses it")
	}
	if AdmitsAll(nil, m, m) {
		t.Error("no modes admits")
	}
}

func TestDescribe(t *testing.T) {
	m := &Identity{UID: 1, Proc: Proc{PID: 4242, Start: 1}, Executable: "/usr/bin/node", Script: home() + "/app/sign.mjs",
		Session: LoginSession{Kind: SessionTTY, ID: 136<<8 | 3}}
	for modes, want := range map[Mode]string{
		Process: "node ~/app/sign.mjs (pid 4242) and its descendants",
		Client:  "node ~/app/sign.mjs in terminal pts/3",
		Session: "any process of terminal pts/3",
		User:    "any local process of the user",
	} {
		if got := Describe([]Mode{modes}, m); got != want {
			t.Errorf("Describe(%s) = %q, want %q", modes, got, want)
		}
	}
	if got := Describe([]Mode{User, Session}, m); got != "any process of terminal pts/3" {
		t.Errorf("Describe(user, session) = %q: want the narrowest", got)
	}
}

func TestParseMode(t *testing.T) {
	if m, err := ParseMode(""); err != nil || m != Client {
		t.Errorf("ParseMode(\"\") = %v, %v; want client", m, err)
	}
	for _, m := range Modes {
		if got, err := ParseMode(string(m)); err != nil || got != m {
			t.Errorf("ParseMode(%s) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("proces"); err == nil {
		t.Error("ParseMode accepts a misspelling")
	}
}

func BenchmarkAdmits(b *testing.B) {
	tty := LoginSession{Kind: SessionTTY, ID: 1}
	m := &Identity{UID: 1, Proc: Proc{PID: 10, Start: 1}, Boot: "0d7b8e2c-5f0a-4c1e-9d7f-2a9e3b4c5d6e", Executable: "/usr/bin/node", Script: "/home/u/app/sign.mjs", Session: tty}
	c := &Identity{UID: 1, Proc: Proc{PID: 11, Start: 2}, Boot: "0d7b8e2c-5f0a-4c1e-9d7f-2a9e3b4c5d6e", Executable: "/usr/bin/node", Script: "/home/u/app/sign.mjs", Session: tty,
		Parents: []Proc{{9, 1}, {8, 1}, {7, 1}, {6, 1}, {5, 1}}}
	modes := []Mode{Client, Process, Session}
	b.ReportAllocs()
	for b.Loop() {
		AdmitsAll(modes, m, c)
		Client.Admits(m, c)
	}
}

// The agent stores a token's minter beside it; what comes back from JSON
// admits exactly as before, and a token stored without one admits no one.
func TestIdentityJSONRoundTrip(t *testing.T) {
	m := &Identity{UID: 1, GID: 2, Proc: Proc{PID: 10, Start: 99}, Boot: "b", Executable: "/usr/bin/node", Script: "/h/a.mjs",
		Session: LoginSession{Kind: SessionSID, ID: 7, Start: 3}, Parents: []Proc{{9, 5}}, Remote: "r"}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Identity
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*m, back) {
		t.Fatalf("round trip:\n%+v\n%+v", m, back)
	}
	var none Identity
	json.Unmarshal([]byte(`{}`), &none)
	if none.Known() || User.Admits(&none, m) {
		t.Error("an identity stored empty admits")
	}
}
