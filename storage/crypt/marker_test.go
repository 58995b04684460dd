package crypt

import (
	"context"
	"strings"
	"testing"

	"github.com/walhub/walhub/storage"
)

func TestGuardKeepsARepositoryOneWay(t *testing.T) {
	ctx := context.Background()
	isObject := func(key string) bool { return strings.Contains(key, "/wal/") }
	kr := newKeyring(t, newIdentity(t))

	// A new repository with keys is marked, and then needs them.
	enc := newLocal(t)
	put(t, enc, "main/receiver.json", nil, []byte("{}")) // a working area's file
	if err := Guard(ctx, enc, kr, isObject); err != nil {
		t.Fatal(err)
	}
	if err := Guard(ctx, enc, kr, isObject); err != nil {
		t.Fatalf("second open: %v", err)
	}
	if err := New(enc, kr).List(ctx, "", func(o storage.ObjectInfo) error {
		if o.Key == MarkerKey {
			t.Errorf("the wrapper lists %s", MarkerKey)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := Guard(ctx, enc, nil, isObject); err == nil || !strings.Contains(err.Error(), "configure [encryption]") {
		t.Fatalf("encrypted repository opened without keys: %v", err)
	}
	if err := Guard(ctx, storage.NewLocalStoreReadOnly(enc.Root()), nil, isObject); err == nil {
		t.Fatal("encrypted repository opened read-only without keys")
	}

	// A repository with objects stored in the clear stays plain.
	plain := newLocal(t)
	put(t, plain, "main/wal/0000000100000000/000000010000000000000001", nil, []byte("clear"))
	if err := Guard(ctx, plain, nil, isObject); err != nil {
		t.Fatal(err)
	}
	err := Guard(ctx, plain, kr, isObject)
	if err == nil || !strings.Contains(err.Error(), "holds objects stored without encryption") {
		t.Fatalf("encryption turned on over plain objects: %v", err)
	}
	if _, err := plain.Stat(ctx, MarkerKey); err == nil {
		t.Fatal("the refused repository was marked")
	}

	// An empty repository opened read-only with keys is left as it is.
	empty := newLocal(t)
	if err := Guard(ctx, storage.NewLocalStoreReadOnly(empty.Root()), kr, isObject); err != nil {
		t.Fatalf("read-only empty repository: %v", err)
	}
}
