package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/walhub/walhub/hub/api"
)

// postJSON sends in as JSON and decodes the answer into out.
func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, http.MethodPost, path, http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}},
		bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("%w: POST %s: decode answer: %w", ErrUnreachable, path, err)
	}
	return nil
}

// SnapshotStart asks the daemon to run pg_backup_start and hold the session
// (an admin token is needed).
func (c *Client) SnapshotStart(ctx context.Context, label string, fast bool) (api.SnapshotStarted, error) {
	var out api.SnapshotStarted
	err := c.postJSON(ctx, api.SnapshotPath(c.server, "start"), api.SnapshotStart{Label: label, Fast: fast}, &out)
	return out, err
}

// SnapshotStop asks the daemon to run pg_backup_stop; the answer holds the
// backup_label and tablespace_map that must go with the copy.
func (c *Client) SnapshotStop(ctx context.Context) (api.SnapshotStopped, error) {
	var out api.SnapshotStopped
	err := c.postJSON(ctx, api.SnapshotPath(c.server, "stop"), struct{}{}, &out)
	return out, err
}
