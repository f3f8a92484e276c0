package keychain

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	dbus "github.com/keybase/dbus"
	"github.com/keybase/go-keychain/secretservice"
	"go.uber.org/zap"
	"golang.org/x/crypto/hkdf"
)

// ServiceAttr is the value of the "service" attribute on every item this
// agent stores in the Secret Service (secret-tool search service stepup-agent).
const ServiceAttr = "stepup-agent"

func init() {
	openSecretService = func(ctx context.Context, opts Options) (Store, error) {
		s, err := OpenSecretService(ctx, opts)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	openAuto = autoLinux
}

// autoLinux picks the Secret Service when a session bus is set and the
// service answers within opts.AutoTimeout, else the file backend.
func autoLinux(ctx context.Context, opts Options) (Store, error) {
	const how = "for the Secret Service instead, start gnome-keyring (or KeePassXC's Secret Service integration) " +
		"in this session and start the agent with --keychain secretservice"
	if !sessionBusSet() {
		return autoFallback(ctx, opts, "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set); "+how)
	}
	aopts := opts
	aopts.Timeout = opts.AutoTimeout
	s, err := OpenSecretService(ctx, aopts)
	if err != nil {
		return autoFallback(ctx, opts, "no Secret Service answered ("+err.Error()+"); "+how)
	}
	s.timeout = opts.Timeout
	r, err := newResilient(ctx, s, opts, "")
	if err != nil {
		s.Close()
		return autoFallback(ctx, opts, "the Secret Service did not answer ("+err.Error()+"); "+how)
	}
	return r, nil
}

func sessionBusSet() bool {
	a := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	// "autolaunch:" would make the D-Bus library run dbus-launch.
	return a != "" && a != "autolaunch:"
}

// SecretService is a Store over the freedesktop.org Secret Service
// (gnome-keyring, KeePassXC, KWallet's bridge), through
// github.com/keybase/go-keychain/secretservice with the DH-AES encrypted
// session: secrets never cross the bus in the clear. Items go in the
// default collection with attributes {service: stepup-agent, kind, name}
// and the label "stepup-agent kind/name".
//
// The library has no contexts: only OpenSession has a timeout, every other
// call can block forever on a frozen daemon. So every operation runs in a
// goroutine under a deadline (Options.Timeout), one at a time; when the
// deadline passes the D-Bus connection is closed, which makes the stuck call
// return at once, and the next operation connects afresh. At most one
// goroutine is ever waiting on the bus per store.
type SecretService struct {
	log     *zap.Logger
	timeout time.Duration

	// sem is held by the goroutine running an operation, from start until
	// the library returns, not merely until the caller gave up.
	sem chan struct{}

	mu  sync.Mutex
	cur *ssConn // guarded by mu
}

type ssConn struct {
	svc     *secretservice.SecretService
	session *secretservice.Session
	conn    *dbus.Conn // the library's connection, so it can be closed
}

func (c *ssConn) close() {
	if c.conn != nil {
		c.conn.Close()
	}
}

// OpenSecretService connects to the Secret Service on the session bus and
// checks that the default collection exists and is unlocked. It refuses to
// start when DBUS_SESSION_BUS_ADDRESS is not set: the D-Bus library would
// run dbus-launch and leave a stray bus and daemon behind.
func OpenSecretService(ctx context.Context, opts Options) (*SecretService, error) {
	opts = opts.withDefaults()
	if !sessionBusSet() {
		return nil, fmt.Errorf("%w: secretservice: no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set "+
			"(run the agent inside the desktop session, or use --keychain file)", ErrUnavailable)
	}
	s := &SecretService{log: opts.Logger, timeout: opts.Timeout, sem: make(chan struct{}, 1)}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// connect opens a D-Bus connection and a DH-AES session.
func (s *SecretService) connect() (*ssConn, error) {
	if !sessionBusSet() {
		return nil, errors.New("no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set")
	}
	svc, err := secretservice.NewService()
	if err != nil {
		return nil, err
	}
	c := &ssConn{svc: svc, conn: libConn(svc)}
	if c.conn == nil {
		c.close()
		return nil, errors.New("the Secret Service library's D-Bus connection cannot be reached")
	}
	c.session, _, err = openDHSession(c.conn, s.timeout)
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// dhPrime is the 1024-bit MODP group of RFC 2409 ("Second Oakley Group"),
// the group of the Secret Service's dh-ietf1024-sha256-aes128-cbc-pkcs7;
// the generator is 2.
var dhPrime, _ = new(big.Int).SetString("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"+
	"020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"+
	"4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"+
	"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16)

// openDHSession opens a DH-AES session and derives its AES key itself;
// it returns the shared secret's length as big.Int.Bytes gives it (for
// the test). The library's OpenSession hands big.Int.Bytes of the shared
// secret to HKDF, which drops its leading zero bytes, while gnome-keyring
// (libgcrypt) uses the secret padded to the prime's 128 bytes: in about
// one session in 256 the two keys differed, so a put was refused ("The
// secret was transferred or encrypted in an invalid way") and a get did
// not decrypt, which stopped the agent at start on a sound keychain.
func openDHSession(conn *dbus.Conn, timeout time.Duration) (*secretservice.Session, int, error) {
	pMinus1 := new(big.Int).Sub(dhPrime, big.NewInt(1))
	var priv *big.Int
	for {
		var err error
		if priv, err = rand.Int(rand.Reader, pMinus1); err != nil {
			return nil, 0, err
		}
		if priv.Sign() > 0 {
			break
		}
	}
	pub := new(big.Int).Exp(big.NewInt(2), priv, dhPrime)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out dbus.Variant
	var path dbus.ObjectPath
	err := conn.Object(secretservice.SecretServiceInterface, secretservice.SecretServiceObjectPath).
		CallWithContext(ctx, "org.freedesktop.Secret.Service.OpenSession", 0, string(secretservice.AuthenticationDHAES), dbus.MakeVariant(pub.Bytes())).
		Store(&out, &path)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to open secretservice session: %w", err)
	}
	theirs, ok := out.Value().([]byte)
	if !ok {
		return nil, 0, errors.New("the Secret Service answered OpenSession without a DH public key")
	}
	their := new(big.Int).SetBytes(theirs)
	if their.Cmp(big.NewInt(1)) <= 0 || their.Cmp(pMinus1) >= 0 {
		return nil, 0, errors.New("the Secret Service's DH public key is out of range")
	}
	shared := new(big.Int).Exp(their, priv, dhPrime)
	ikm := shared.FillBytes(make([]byte, (dhPrime.BitLen()+7)/8))
	key := make([]byte, 16)
	if _, err := io.ReadFull(hkdf.New(sha256.New, ikm, nil, nil), key); err != nil {
		return nil, 0, err
	}
	return &secretservice.Session{Mode: secretservice.AuthenticationDHAES, Path: path, Public: pub, Private: priv, AESKey: key}, len(shared.Bytes()), nil
}

// libConn digs the *dbus.Conn out of the library's SecretService, which
// keeps it unexported and offers no Close. Closing it is the only way to
// unblock a call to a frozen daemon and to release the connection.
func libConn(svc *secretservice.SecretService) *dbus.Conn {
	v := reflect.ValueOf(svc).Elem().FieldByName("conn")
	if !v.IsValid() || v.Type() != reflect.TypeOf((*dbus.Conn)(nil)) {
		return nil
	}
	return (*dbus.Conn)(v.UnsafePointer())
}

// do runs fn against a live connection under the store's deadline.
func (s *SecretService) do(ctx context.Context, what string, fn func(c *ssConn) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: secretservice %s: an earlier call is still waiting for the Secret Service", ErrUnavailable, what)
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.sem }()
		var err error
		// A second try only when the daemon refused the session's
		// encryption (sessionCryptoFailed): a new session fixes it.
		for try := 0; try < 2; try++ {
			s.mu.Lock()
			c := s.cur
			s.mu.Unlock()
			if c == nil {
				if c, err = s.connect(); err != nil {
					break
				}
				s.mu.Lock()
				if ctx.Err() != nil {
					// The caller gave up while we connected.
					s.mu.Unlock()
					c.close()
					err = ctx.Err()
					break
				}
				s.cur = c
				s.mu.Unlock()
			}
			err = fn(c)
			if err != nil && !errors.Is(err, ErrNotFound) {
				// The session may be gone with the daemon: start afresh.
				s.drop(c)
			}
			if !sessionCryptoFailed(err) || ctx.Err() != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("%w: secretservice %s: %s", ErrUnavailable, what, explain(err))
	case <-ctx.Done():
		s.mu.Lock()
		c := s.cur
		s.mu.Unlock()
		if c != nil {
			s.drop(c) // unblocks the stuck call
		}
		return fmt.Errorf("%w: secretservice %s: %w within %s", ErrUnavailable, what, errNoAnswer, s.timeout)
	}
}

// sessionCryptoFailed reports the daemon refusing a secret our DH-AES
// session encrypted ("The secret was transferred or encrypted in an
// invalid way"), which a new session does not repeat. (It came from one
// session in 256, whose key differed from the daemon's: openDHSession
// fixed that; the second try stays as a defence.) (A secret that does not decrypt stays an error: it may
// be the store's, not the session's.)
func sessionCryptoFailed(err error) bool {
	return err != nil && strings.Contains(err.Error(), "transferred or encrypted in an invalid way")
}

// drop forgets and closes c if it is still the current connection.
func (s *SecretService) drop(c *ssConn) {
	s.mu.Lock()
	if s.cur == c {
		s.cur = nil
	}
	s.mu.Unlock()
	c.close()
}

// explain turns the library's and the daemon's errors into what to do.
func explain(err error) string {
	var pd secretservice.PromptDismissedError
	var de dbus.Error
	name := ""
	if errors.As(err, &de) {
		name = de.Name
	}
	switch {
	case errors.As(err, &pd):
		return "the keyring is locked and the unlock prompt was dismissed (a headless session cannot answer it): " +
			"unlock the login keyring (log in to the desktop, or printf %s PASSWORD | gnome-keyring-daemon --unlock)"
	case name == "org.freedesktop.Secret.Error.IsLocked", errors.Is(err, errLocked):
		return "the login keyring is locked: unlock it (log in to the desktop, or printf %s PASSWORD | gnome-keyring-daemon --unlock)"
	case name == "org.freedesktop.Secret.Error.NoSuchObject", name == "org.freedesktop.DBus.Error.UnknownObject",
		name == "org.freedesktop.DBus.Error.UnknownMethod":
		return "the Secret Service has no default collection: create or unlock the login keyring " +
			"(log in to the desktop once, or printf %s PASSWORD | gnome-keyring-daemon --unlock)"
	case name == "org.freedesktop.DBus.Error.ServiceUnknown", name == "org.freedesktop.DBus.Error.NameHasNoOwner":
		return "no Secret Service on the session bus: start gnome-keyring (or KeePassXC's Secret Service)"
	}
	return err.Error()
}

// errLocked is returned by Ping when the default collection is locked.
var errLocked = errors.New("the default collection is locked")

// Ping checks that the service answers and that the default collection
// exists and is unlocked (writing to a locked one needs a prompt).
func (s *SecretService) Ping(ctx context.Context) error {
	return s.do(ctx, "ping", func(c *ssConn) error {
		v, err := c.svc.Obj(secretservice.DefaultCollection).GetProperty("org.freedesktop.Secret.Collection.Locked")
		if err != nil {
			return err
		}
		if locked, ok := v.Value().(bool); ok && locked {
			return errLocked
		}
		return nil
	})
}

func attrs(kind, name string) secretservice.Attributes {
	a := secretservice.Attributes{"service": ServiceAttr, "kind": kind}
	if name != "" {
		a["name"] = name
	}
	return a
}

func (s *SecretService) Get(ctx context.Context, kind, name string) ([]byte, error) {
	var out []byte
	err := s.do(ctx, "get", func(c *ssConn) error {
		items, err := c.svc.SearchCollection(secretservice.DefaultCollection, attrs(kind, name))
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return ErrNotFound
		}
		d, err := c.svc.GetSecret(items[0], *c.session)
		if err != nil {
			return err
		}
		if d == nil {
			// The library returns (nil, nil) when it cannot decrypt.
			return errors.New("cannot decrypt the secret from the Secret Service session")
		}
		out = d
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *SecretService) Put(ctx context.Context, kind, name string, data []byte) error {
	return s.do(ctx, "put", func(c *ssConn) error {
		// Clip: the library pads the plaintext with append, which would
		// write into the caller's spare capacity.
		secret, err := c.session.NewSecret(slices.Clip(append([]byte{}, data...)))
		if err != nil {
			return err
		}
		props := secretservice.NewSecretProperties(ServiceAttr+" "+kind+"/"+name, attrs(kind, name))
		_, err = c.svc.CreateItem(secretservice.DefaultCollection, props, secret, secretservice.ReplaceBehaviorReplace)
		return err
	})
}

func (s *SecretService) Delete(ctx context.Context, kind, name string) error {
	return s.do(ctx, "delete", func(c *ssConn) error {
		items, err := c.svc.SearchCollection(secretservice.DefaultCollection, attrs(kind, name))
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := c.svc.DeleteItem(it); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *SecretService) List(ctx context.Context, kind string) ([]string, error) {
	var names []string
	err := s.do(ctx, "list", func(c *ssConn) error {
		items, err := c.svc.SearchCollection(secretservice.DefaultCollection, attrs(kind, ""))
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, it := range items {
			a, err := c.svc.GetAttributes(it)
			if err != nil {
				return err
			}
			if n := a["name"]; n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// GetAll returns every item of kind, by name, in three round trips
// whatever their number: one search, the items' attributes asked for all
// at once (pipelined), and one GetSecrets for every secret. The agent's
// start loads each kind this way; item by item it took three round trips
// an item, seconds on a loaded machine with a few hundred tokens.
func (s *SecretService) GetAll(ctx context.Context, kind string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.do(ctx, "load", func(c *ssConn) error {
		items, err := c.svc.SearchCollection(secretservice.DefaultCollection, attrs(kind, ""))
		if err != nil || len(items) == 0 {
			return err
		}
		// At most 64 calls in flight: a bus counts pending replies per
		// connection (dbus-daemon's built-in limit is 128).
		const window = 64
		calls := make([]*dbus.Call, len(items))
		send := func(i int) {
			calls[i] = c.conn.Object(secretservice.SecretServiceInterface, items[i]).
				Go("org.freedesktop.DBus.Properties.Get", 0, nil, "org.freedesktop.Secret.Item", "Attributes")
		}
		for i := 0; i < len(items) && i < window; i++ {
			send(i)
		}
		names := make(map[dbus.ObjectPath]string, len(items))
		for i := range items {
			call := calls[i]
			<-call.Done
			if i+window < len(items) {
				send(i + window)
			}
			var v dbus.Variant
			if err := call.Store(&v); err != nil {
				var de dbus.Error
				if errors.As(err, &de) && (de.Name == "org.freedesktop.Secret.Error.NoSuchObject" || de.Name == "org.freedesktop.DBus.Error.UnknownObject") {
					continue // deleted since the search
				}
				return fmt.Errorf("failed to get attributes: %w", err)
			}
			a, ok := v.Value().(map[string]string)
			if !ok {
				return errors.New("failed to coerce item attributes")
			}
			if n := a["name"]; n != "" {
				names[items[i]] = n
			}
		}
		var secrets map[dbus.ObjectPath]secretservice.Secret
		err = c.svc.ServiceObj().Call("org.freedesktop.Secret.Service.GetSecrets", 0, items, c.session.Path).Store(&secrets)
		if err != nil {
			return fmt.Errorf("failed to get secrets: %w", err)
		}
		for path, sec := range secrets {
			n, ok := names[path]
			if !ok {
				continue
			}
			d, err := decryptSecret(c.session.AESKey, sec.Parameters, sec.Value)
			if err != nil {
				return errors.New("cannot decrypt the secret from the Secret Service session")
			}
			if _, dup := out[n]; !dup {
				out[n] = d
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decryptSecret undoes the DH-AES session's AES-128-CBC with PKCS#7
// padding (what the library's GetSecret does, for GetSecrets).
func decryptSecret(key, iv, ct []byte) ([]byte, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != aes.BlockSize || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("bad ciphertext")
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(pt, ct)
	n := int(pt[len(pt)-1])
	if n == 0 || n > aes.BlockSize || n > len(pt) {
		return nil, errors.New("bad padding")
	}
	for _, x := range pt[len(pt)-n:] {
		if int(x) != n {
			return nil, errors.New("bad padding")
		}
	}
	return pt[:len(pt)-n], nil
}

func (s *SecretService) Backend() string { return "secretservice" }

// Close closes the session and the connection.
func (s *SecretService) Close() error {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	_ = s.do(context.Background(), "close", func(c *ssConn) error {
		c.svc.CloseSession(c.session)
		return nil
	})
	s.drop(c)
	return nil
}
