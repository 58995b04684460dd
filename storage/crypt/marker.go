package crypt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/walhub/walhub/storage"
)

// MarkerKey is a small plaintext object at the root of an encrypted
// repository's store that says it is encrypted, and how. It is what keeps a
// repository from being used both ways: without it a configuration that lost
// its [encryption] section would hand ciphertext to restores and standbys,
// and new objects would be stored in the clear beside encrypted ones. (A '.'
// never occurs in a server name, so the key cannot meet the layout.)
const MarkerKey = "encryption.json"

// markerFormat names the format of every object: age v1, one X25519
// recipient, key ID in the metadata.
const markerFormat = "age-v1-x25519"

type marker struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	Note    string    `json:"note"`
}

// Guard checks that the store's objects agree with the configuration before
// the repository is used: keys is nil when the configuration has no
// [encryption]. An encrypted repository opened without keys is refused; so is
// turning encryption on for a repository that already holds objects stored
// in the clear (isObject tells an object of the layout from a working area's
// files sharing a local directory). The first open of a new encrypted
// repository writes the marker.
func Guard(ctx context.Context, inner storage.ObjectStore, keys *Keyring, isObject func(key string) bool) error {
	r, err := inner.Open(ctx, MarkerKey)
	switch {
	case err == nil:
		defer r.Close()
		var m marker
		if err := json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&m); err != nil {
			return fmt.Errorf("repository %s: read %s: %w", inner, MarkerKey, err)
		}
		if keys == nil {
			return fmt.Errorf("repository %s is encrypted (%s says %s): configure [encryption] with its key", inner, MarkerKey, m.Format)
		}
		if m.Format != markerFormat {
			return fmt.Errorf("repository %s is encrypted as %q, which this walhub does not know (it knows %s)", inner, m.Format, markerFormat)
		}
		return nil
	case !errors.Is(err, storage.ErrNotExist):
		return fmt.Errorf("repository %s: %w", inner, err)
	case keys == nil:
		return nil
	}
	stop := errors.New("found")
	var plain string
	err = inner.List(ctx, "", func(o storage.ObjectInfo) error {
		if isObject(o.Key) {
			plain = o.Key
			return stop
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return fmt.Errorf("repository %s: %w", inner, err)
	}
	if plain != "" {
		return fmt.Errorf("repository %s holds objects stored without encryption (%s, ...): encryption can only be turned on for a new repository", inner, plain)
	}
	w, err := inner.Create(ctx, MarkerKey, nil)
	if errors.Is(err, storage.ErrReadOnly) {
		return nil // an empty repository opened read-only: nothing to mark
	}
	if err != nil {
		return fmt.Errorf("repository %s: mark as encrypted: %w", inner, err)
	}
	defer w.Abort()
	m := marker{Format: markerFormat, Created: time.Now().UTC(),
		Note: "Every object of this repository is encrypted with age (age-encryption.org); walhub needs the key its [encryption] section names."}
	if err := json.NewEncoder(w).Encode(m); err != nil {
		return fmt.Errorf("repository %s: mark as encrypted: %w", inner, err)
	}
	if _, err := w.Commit(ctx); err != nil {
		return fmt.Errorf("repository %s: mark as encrypted: %w", inner, err)
	}
	return nil
}
