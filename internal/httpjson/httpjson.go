// Package httpjson fetches small JSON documents (discovery documents, key sets) over HTTP.
package httpjson

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// MaxBody bounds what Get reads: discovery documents and key sets are a few KiB, and a server
// that answers more must not cost the caller its memory.
const MaxBody = 1 << 20

// Get decodes the JSON that url answers with 200 into v, reading at most MaxBody bytes; ctx
// bounds the request.
func Get(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(v); err != nil {
		return fmt.Errorf("%s answered something other than JSON: %w", url, err)
	}
	return nil
}
