//go:build linux

// Package fprintd is a client of fprintd's D-Bus API on the system bus
// (net.reactivated.Fprint): find the default reader, list the user's
// enrolled fingers, and run one verification (Claim, VerifyStart "any",
// VerifyFingerSelected/VerifyStatus signals, VerifyStop, Release). It uses
// github.com/godbus/dbus/v5, the D-Bus implementation the agent already
// uses for logind and the Secret Service.
//
// Every call has a deadline, a verification releases the device on every
// path (match, failure, timeout, cancellation, fprintd going away), and
// the errors say what the user can do.
package fprintd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// D-Bus names of fprintd.
const (
	BusName      = "net.reactivated.Fprint"
	ManagerPath  = dbus.ObjectPath("/net/reactivated/Fprint/Manager")
	ManagerIface = "net.reactivated.Fprint.Manager"
	DeviceIface  = "net.reactivated.Fprint.Device"
	ErrorPrefix  = "net.reactivated.Fprint.Error."
)

// callTimeout bounds every method call; fprintd answers them at once (a
// verification's result comes later, as a signal).
const callTimeout = 5 * time.Second

// Errors a caller can tell apart. Each wraps fprintd's own message.
var (
	// ErrUnavailable: no fprintd on the system bus, or no system bus.
	ErrUnavailable = errors.New("fprintd is not running (no fingerprint service on the system bus)")
	// ErrNoDevice: fprintd runs but sees no reader.
	ErrNoDevice = errors.New("no fingerprint reader found")
	// ErrNoFingers: the user has no fingerprints enrolled with fprintd.
	ErrNoFingers = errors.New("no fingerprints enrolled for this user: enroll them with fprintd-enroll")
	// ErrPermissionDenied: polkit refused (fprintd allows verification
	// only from an active local session by default).
	ErrPermissionDenied = errors.New("fprintd refused access to the fingerprint reader (polkit: net.reactivated.fprint.device.verify)")
	// ErrBusy: another program holds the reader.
	ErrBusy = errors.New("the fingerprint reader is in use by another program")
	// ErrNoMatch: the finger did not match (fprintd's verify-no-match).
	ErrNoMatch = errors.New("the fingerprint did not match")
	// ErrGone: fprintd left the bus or the reader was disconnected
	// during a verification.
	ErrGone = errors.New("the fingerprint reader went away during the verification")
)

// Client talks to fprintd on one bus connection.
type Client struct {
	conn *dbus.Conn
	// owned: Close closes conn.
	owned bool
}

// Connect opens a private connection to the system bus (honouring
// DBUS_SYSTEM_BUS_ADDRESS) and checks that fprintd is there or
// activatable.
func Connect(ctx context.Context) (*Client, error) {
	// Not dbus.WithContext(ctx): that closes the connection when ctx
	// ends, and a verification must still send VerifyStop and Release
	// after its caller hung up. ctx bounds the check below.
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	c := &Client{conn: conn, owned: true}
	if err := c.present(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the bus connection.
func (c *Client) Close() error {
	if c.owned {
		return c.conn.Close()
	}
	return nil
}

func (c *Client) present(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var has bool
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, BusName).Store(&has); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if has {
		return nil
	}
	var names []string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&names); err == nil {
		for _, n := range names {
			if n == BusName {
				return nil
			}
		}
	}
	return ErrUnavailable
}

// call runs one method with the package's deadline and maps fprintd's
// errors.
func (c *Client) call(ctx context.Context, path dbus.ObjectPath, iface, member string, out any, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	call := c.conn.Object(BusName, path).CallWithContext(ctx, iface+"."+member, 0, args...)
	if call.Err != nil {
		return mapError(member, call.Err)
	}
	if out != nil {
		return call.Store(out)
	}
	return nil
}

func mapError(member string, err error) error {
	var de dbus.Error
	if errors.As(err, &de) {
		msg := strings.Join(anyStrings(de.Body), ": ")
		switch strings.TrimPrefix(de.Name, ErrorPrefix) {
		case "PermissionDenied":
			return fmt.Errorf("%w: %s", ErrPermissionDenied, msg)
		case "AlreadyInUse":
			return fmt.Errorf("%w: %s", ErrBusy, msg)
		case "NoEnrolledPrints":
			return ErrNoFingers
		case "NoSuchDevice":
			return ErrNoDevice
		}
		switch de.Name {
		case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
			"org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected":
			return fmt.Errorf("%w (%s: %s)", ErrUnavailable, member, msg)
		}
		return fmt.Errorf("fprintd %s: %s: %s", member, de.Name, msg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("fprintd did not answer %s within %s", member, callTimeout)
	}
	return fmt.Errorf("fprintd %s: %w", member, err)
}

func anyStrings(body []any) []string {
	var out []string
	for _, b := range body {
		if s, ok := b.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// owner is the unique name that owns fprintd's name now (activating it
// when it is activatable but not running).
func (c *Client) owner(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var name string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName).Store(&name); err != nil {
		return "", mapError("GetNameOwner", err)
	}
	return name, nil
}

// DefaultDevice returns the path of fprintd's default reader.
func (c *Client) DefaultDevice(ctx context.Context) (dbus.ObjectPath, error) {
	var p dbus.ObjectPath
	if err := c.call(ctx, ManagerPath, ManagerIface, "GetDefaultDevice", &p); err != nil {
		return "", err
	}
	return p, nil
}

// EnrolledFingers lists the fingers the current user has enrolled on dev
// (ListEnrolledFingers with the empty user name: the caller's own).
func (c *Client) EnrolledFingers(ctx context.Context, dev dbus.ObjectPath) ([]string, error) {
	var fingers []string
	if err := c.call(ctx, dev, DeviceIface, "ListEnrolledFingers", &fingers, ""); err != nil {
		return nil, err
	}
	if len(fingers) == 0 {
		return nil, ErrNoFingers
	}
	return fingers, nil
}

// Event is one report of a running verification.
type Event struct {
	// Result is fprintd's result string (verify-match, verify-no-match,
	// verify-retry-scan, ...), or "finger-selected" for
	// VerifyFingerSelected.
	Result string
	// Done is fprintd's done flag: the verification has ended.
	Done bool
	// Message is what to show the user.
	Message string
}

// Message is what a person should read for an fprintd result.
func Message(result string) string {
	switch result {
	case "verify-match":
		return "Fingerprint matched."
	case "verify-no-match":
		return "The fingerprint did not match. Try again."
	case "verify-retry-scan":
		return "The scan did not work. Touch the reader again."
	case "verify-swipe-too-short":
		return "The swipe was too short. Swipe again."
	case "verify-finger-not-centered":
		return "The finger was not centred on the reader. Try again."
	case "verify-remove-and-retry":
		return "Lift your finger and touch the reader again."
	case "verify-disconnected":
		return "The fingerprint reader was disconnected."
	case "finger-selected":
		return "Touch the fingerprint reader."
	}
	return "The fingerprint reader reported " + result + "."
}

// Verification is one claimed device with a verification running.
type Verification struct {
	c     *Client
	dev   dbus.ObjectPath
	owner string // fprintd's unique name

	sig    chan *dbus.Signal
	events chan Event
	done   chan struct{}
	result error // set before done closes

	stopOnce sync.Once
}

// Verify claims dev for the current user and starts verifying any
// enrolled finger. maxTries no-matches end it with ErrNoMatch (fprintd
// ends a verification at each no-match; Verify starts the next one).
// Events, retries and the result are read from the returned
// Verification; Stop releases the device and must be called on every
// path (it is idempotent). ctx bounds the whole verification: when it
// ends the verification is stopped and the device released.
func (c *Client) Verify(ctx context.Context, dev dbus.ObjectPath, maxTries int) (*Verification, error) {
	if maxTries < 1 {
		maxTries = 1
	}
	// Only signals from the connection that owns fprintd's name count:
	// anyone on the system bus can emit a look-alike VerifyStatus.
	owner, err := c.owner(ctx)
	if err != nil {
		return nil, err
	}
	v := &Verification{c: c, dev: dev, owner: owner, sig: make(chan *dbus.Signal, 16), events: make(chan Event, 16), done: make(chan struct{})}
	matchDev := []dbus.MatchOption{dbus.WithMatchObjectPath(dev), dbus.WithMatchInterface(DeviceIface)}
	matchOwner := []dbus.MatchOption{dbus.WithMatchInterface("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)}
	if err := c.conn.AddMatchSignalContext(ctx, matchDev...); err != nil {
		return nil, mapError("AddMatch", err)
	}
	if err := c.conn.AddMatchSignalContext(ctx, matchOwner...); err != nil {
		c.conn.RemoveMatchSignal(matchDev...)
		return nil, mapError("AddMatch", err)
	}
	c.conn.Signal(v.sig)
	cleanupMatch := func() {
		c.conn.RemoveSignal(v.sig)
		c.conn.RemoveMatchSignal(matchDev...)
		c.conn.RemoveMatchSignal(matchOwner...)
	}
	if err := c.call(ctx, dev, DeviceIface, "Claim", nil, ""); err != nil {
		cleanupMatch()
		return nil, err
	}
	if err := c.call(ctx, dev, DeviceIface, "VerifyStart", nil, "any"); err != nil {
		c.release(dev)
		cleanupMatch()
		return nil, err
	}
	go v.run(ctx, maxTries, cleanupMatch)
	return v, nil
}

// release stops any verification and releases dev, with a deadline of its
// own (the caller's context may be over).
func (c *Client) release(dev dbus.ObjectPath) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_ = c.call(ctx, dev, DeviceIface, "Release", nil)
}

func (c *Client) stopVerify(dev dbus.ObjectPath) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_ = c.call(ctx, dev, DeviceIface, "VerifyStop", nil)
}

func (v *Verification) run(ctx context.Context, maxTries int, cleanup func()) {
	tries := 0
	verifying := true
	finish := func(err error) {
		if verifying {
			v.c.stopVerify(v.dev)
		}
		v.c.release(v.dev)
		cleanup()
		v.result = err
		close(v.events)
		close(v.done)
	}
	emit := func(e Event) {
		select {
		case v.events <- e:
		default: // a slow reader loses progress messages, never the result
		}
	}
	for {
		select {
		case <-ctx.Done():
			finish(ctx.Err())
			return
		case s, ok := <-v.sig:
			if !ok {
				verifying = false
				finish(fmt.Errorf("%w: the bus connection closed", ErrGone))
				return
			}
			if s.Name != "org.freedesktop.DBus.NameOwnerChanged" && (s.Sender != v.owner || s.Path != v.dev) {
				continue // not fprintd's: an impostor or another device
			}
			switch s.Name {
			case "org.freedesktop.DBus.NameOwnerChanged":
				if s.Sender != "org.freedesktop.DBus" {
					continue
				}
				if len(s.Body) == 3 {
					if newOwner, _ := s.Body[2].(string); newOwner == "" {
						verifying = false
						finish(fmt.Errorf("%w: fprintd left the bus", ErrGone))
						return
					}
				}
			case DeviceIface + ".VerifyFingerSelected":
				emit(Event{Result: "finger-selected", Message: Message("finger-selected")})
			case DeviceIface + ".VerifyStatus":
				if len(s.Body) != 2 {
					continue
				}
				result, _ := s.Body[0].(string)
				done, _ := s.Body[1].(bool)
				emit(Event{Result: result, Done: done, Message: Message(result)})
				if !done {
					continue // retry-scan and friends: keep waiting
				}
				switch result {
				case "verify-match":
					v.c.stopVerify(v.dev)
					verifying = false
					finish(nil)
					return
				case "verify-no-match":
					tries++
					v.c.stopVerify(v.dev)
					verifying = false
					if tries >= maxTries {
						finish(ErrNoMatch)
						return
					}
					if err := v.c.call(ctx, v.dev, DeviceIface, "VerifyStart", nil, "any"); err != nil {
						if ctx.Err() != nil {
							err = ctx.Err()
						}
						finish(err)
						return
					}
					verifying = true
				case "verify-disconnected":
					verifying = false
					finish(fmt.Errorf("%w: %s", ErrGone, Message(result)))
					return
				default:
					finish(fmt.Errorf("fingerprint verification failed: %s", Message(result)))
					return
				}
			}
		}
	}
}

// Events reports progress (retry-scan and the like) and is closed when
// the verification ends.
func (v *Verification) Events() <-chan Event { return v.events }

// Done is closed when the verification has ended and the device is
// released.
func (v *Verification) Done() <-chan struct{} { return v.done }

// Err is the result once Done is closed: nil for a match, ErrNoMatch,
// ErrGone, the context's error, or another failure.
func (v *Verification) Err() error {
	<-v.done
	return v.result
}
