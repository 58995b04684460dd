package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/walhub/walhub/basebackup"
)

// fileOwner is who the files of a restore are given to (--owner).
type fileOwner struct {
	name     string
	uid, gid int
}

// restoreOwner resolves --owner USER[:GROUP]. Run as root, a restore must
// name the owner: PostgreSQL refuses to start on a data directory it does not
// own, and root-owned files are what a restore as root would leave. It returns
// nil when the files are to keep the running user as owner.
func restoreOwner(spec string) (*fileOwner, error) {
	if spec == "" {
		if os.Geteuid() == 0 {
			return nil, errors.New("restore run as root: the restored files would belong to root, and PostgreSQL refuses to start " +
				"on a data directory it does not own; run it as the PostgreSQL user (sudo -u postgres walhub restore ...), " +
				"or give --owner postgres")
		}
		return nil, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--owner %s: %w", spec, err)
	}
	o := &fileOwner{name: spec}
	o.uid, _ = strconv.Atoi(u.Uid)
	o.gid, _ = strconv.Atoi(u.Gid)
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("--owner %s: %w", spec, err)
		}
		o.gid, _ = strconv.Atoi(g.Gid)
	}
	if os.Geteuid() != 0 && (o.uid != os.Geteuid() || o.gid != os.Getegid() && !hasGroupMember(o.gid)) {
		return nil, fmt.Errorf("--owner %s: only root can give files to another user; run walhub restore as %s instead", spec, name)
	}
	return o, nil
}

func hasGroupMember(gid int) bool {
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}

// unpackOwner is o for a restore's unpack, which gives each file away as it
// writes it; nil for nil.
func (o *fileOwner) unpackOwner() *basebackup.Owner {
	if o == nil {
		return nil
	}
	return &basebackup.Owner{UID: o.uid, GID: o.gid}
}

// give hands every file and directory under each of dirs to the owner (the
// symlinks themselves, not what they point at), then makes that durable.
func (o *fileOwner) give(dirs ...string) error {
	if o == nil {
		return nil
	}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, o.uid, o.gid)
		})
		if err != nil {
			return fmt.Errorf("--owner %s: %w", o.name, err)
		}
		if err := syncFS(dir); err != nil {
			return fmt.Errorf("--owner %s: %w", o.name, err)
		}
	}
	return nil
}

// syncFS flushes the file system holding dir (the ownership changes).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
