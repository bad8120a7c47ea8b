package wrk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const report = `Running 20s test @ http://127.0.0.1:33761
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.48ms    1.98ms  25.30ms   90.03%
  Latency Distribution
     50%    0.86ms
     75%    1.81ms
     90%    3.45ms
     99%   10.19ms
  235818 requests in 15.01s, 165.41MB read
  Socket errors: connect 0, read 0, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:  15708.95
Transfer/sec:     11.02MB
`

func TestParseReadsThroughputLatencyAndErrors(t *testing.T) {
	got := Parse(report)
	want := Result{RPS: 15708.95, P50: "0.86ms", P99: "10.19ms", Non2xx: 3, SocketErrors: "connect 0, read 0, write 0, timeout 2"}
	if got != want {
		t.Fatalf("Parse = %+v, want %+v", got, want)
	}
}

func TestParseOfAReportWithoutErrorsSaysNone(t *testing.T) {
	clean := strings.NewReplacer("  Socket errors: connect 0, read 0, write 0, timeout 2\n", "", "  Non-2xx or 3xx responses: 3\n", "").Replace(report)
	if got := Parse(clean); got.Non2xx != 0 || got.SocketErrors != "none" {
		t.Fatalf("Parse = %+v, want no non-2xx and socket errors none", got)
	}
}

func TestTheScriptPostsEveryBodyToThePathInTurn(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens.lua")
	if err := WriteScript(file, "/oauth2/token", []string{"grant_type=client_credentials&client_id=a", `client_id="b"`}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"grant_type=client_credentials&client_id=a",`, `"client_id=\"b\"",`, `local path = "/oauth2/token"`, "request = function()", `wrk.format("POST", path`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the script lacks %s:\n%s", want, data)
		}
	}
}
