package crypt

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"filippo.io/age"
)

// A key is an age X25519 identity ("AGE-SECRET-KEY-1…", what age-keygen and
// `walhub keygen` make). Its ID is derived from the public recipient, never
// from the secret. (age's post-quantum hybrid keys are not accepted: their
// larger header would make object sizes depend on the key type.)
type key struct {
	id        string
	identity  *age.X25519Identity
	recipient *age.X25519Recipient
}

// KeyID returns the ID of the key whose public recipient is recipient
// ("age1…"): the first 8 bytes of its SHA-256, in hex. It names a key in
// object metadata, the catalog, messages and logs; it reveals nothing of the
// secret.
func KeyID(recipient string) string {
	sum := sha256.Sum256([]byte(recipient))
	return hex.EncodeToString(sum[:8])
}

// Keyring holds the keys of an encrypted repository: the current one, which
// encrypts every new object, and previous ones, which only decrypt objects
// written before a rotation. It never prints a secret.
type Keyring struct {
	current *key
	all     []*key // current first
}

// NewKeyring builds a keyring from parsed identities: current encrypts new
// objects, every one of them decrypts.
func NewKeyring(current *age.X25519Identity, previous ...*age.X25519Identity) (*Keyring, error) {
	kr := &Keyring{}
	for i, id := range append([]*age.X25519Identity{current}, previous...) {
		rc := id.Recipient()
		k := &key{id: KeyID(rc.String()), identity: id, recipient: rc}
		for _, o := range kr.all {
			if o.id == k.id {
				return nil, fmt.Errorf("key %s given twice", k.id)
			}
		}
		if i == 0 {
			kr.current = k
		}
		kr.all = append(kr.all, k)
	}
	return kr, nil
}

// LoadKeyring reads the current key and any previous ones from their sources:
// "file:/path" (an age identity file, one key) or "env:NAME" (an environment
// variable holding one key). Errors name the source, never its content.
func LoadKeyring(current string, previous []string) (*Keyring, error) {
	cur, err := LoadKey(current)
	if err != nil {
		return nil, err
	}
	prev := make([]*age.X25519Identity, 0, len(previous))
	for _, src := range previous {
		id, err := LoadKey(src)
		if err != nil {
			return nil, err
		}
		prev = append(prev, id)
	}
	return NewKeyring(cur, prev...)
}

// LoadKey reads one age X25519 identity from a source, "file:/path" or
// "env:NAME". Lines starting with '#' and empty lines are ignored, as in age's
// own key files.
func LoadKey(source string) (*age.X25519Identity, error) {
	var text string
	switch {
	case strings.HasPrefix(source, "file:"):
		path := strings.TrimPrefix(source, "file:")
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("key %s: the path must be absolute", source)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// The path error names the file, not its content.
			return nil, fmt.Errorf("key %s: %w", source, err)
		}
		text = string(b)
	case strings.HasPrefix(source, "env:"):
		name := strings.TrimPrefix(source, "env:")
		v, ok := os.LookupEnv(name)
		if !ok {
			return nil, fmt.Errorf("key %s: environment variable %s is not set", source, name)
		}
		text = v
	default:
		// Not quoted: the value may be a key pasted in by mistake.
		return nil, errors.New("key source: want file:/path or env:NAME (never the key itself)")
	}
	ids, err := age.ParseIdentities(strings.NewReader(text))
	if err == nil && len(ids) == 1 {
		if id, ok := ids[0].(*age.X25519Identity); ok {
			return id, nil
		}
	}
	// age's parse errors can quote characters of the key: leave them out.
	return nil, fmt.Errorf("key %s: does not hold exactly one age X25519 secret key (a line AGE-SECRET-KEY-1…)", source)
}

// CurrentID is the ID of the key that encrypts new objects.
func (kr *Keyring) CurrentID() string { return kr.current.id }

// IDs lists the IDs of every key, the current one first.
func (kr *Keyring) IDs() []string {
	out := make([]string, len(kr.all))
	for i, k := range kr.all {
		out[i] = k.id
	}
	return out
}

// identities returns every key's identity, the one named by preferID first
// when it is known (so the usual case costs one unwrap).
func (kr *Keyring) identities(preferID string) []age.Identity {
	out := make([]age.Identity, 0, len(kr.all))
	for _, k := range kr.all {
		if k.id == preferID {
			out = append([]age.Identity{k.identity}, out...)
		} else {
			out = append(out, k.identity)
		}
	}
	return out
}

// Has tells whether the keyring holds the key with that ID.
func (kr *Keyring) Has(id string) bool {
	for _, k := range kr.all {
		if k.id == id {
			return true
		}
	}
	return false
}

// ErrWrongKey is returned (wrapped, in a *KeyError) when no configured key
// decrypts an object.
var ErrWrongKey = errors.New("no configured key decrypts it")

// KeyError says which key an object needs and which keys are configured.
type KeyError struct {
	Key        string   // the object
	KeyID      string   // from the object's metadata; "" when it has none
	Configured []string // IDs of the configured keys
}

func (e *KeyError) Error() string {
	conf := strings.Join(e.Configured, ", ")
	if slices.Contains(e.Configured, e.KeyID) {
		return fmt.Sprintf("decrypt %s: it records key %s, which is configured but does not open it: the object is corrupt or was tampered with", e.Key, e.KeyID)
	}
	if e.KeyID == "" {
		return fmt.Sprintf("decrypt %s: %v (configured keys: %s; the object records no key ID)", e.Key, ErrWrongKey, conf)
	}
	return fmt.Sprintf("decrypt %s: encrypted with key %s, which is not among the configured keys (%s)", e.Key, e.KeyID, conf)
}

func (e *KeyError) Unwrap() error { return ErrWrongKey }
