// Package wrk writes the wrk scripts of the token benchmarks and reads wrk's report.
package wrk

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Result is what the benchmarks read of a wrk run's report (with --latency).
type Result struct {
	RPS          float64
	P50, P99     string
	Non2xx       int
	SocketErrors string
}

var (
	rpsRe     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50Re     = regexp.MustCompile(`\n\s+50%\s+(\S+)`)
	p99Re     = regexp.MustCompile(`\n\s+99%\s+(\S+)`)
	non2xxRe  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	socketsRe = regexp.MustCompile(`Socket errors:\s+(.*)`)
)

// Parse reads wrk's report; what it lacks stays zero, and the socket errors "none".
func Parse(out string) Result {
	var r Result
	if m := rpsRe.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := p50Re.FindStringSubmatch(out); m != nil {
		r.P50 = m[1]
	}
	if m := p99Re.FindStringSubmatch(out); m != nil {
		r.P99 = m[1]
	}
	if m := non2xxRe.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.Atoi(m[1])
	}
	r.SocketErrors = "none"
	if m := socketsRe.FindStringSubmatch(out); m != nil {
		r.SocketErrors = m[1]
	}
	return r
}

// WriteScript writes a wrk script that POSTs the form bodies to path in turn, each connection
// starting at a random one. The requests are formatted once, in init, so that wrk spends as
// little of the shared CPU as it can per request.
func WriteScript(file, path string, bodies []string) error {
	var b strings.Builder
	b.WriteString("local bodies = {\n")
	for _, body := range bodies {
		fmt.Fprintf(&b, "  %q,\n", body)
	}
	fmt.Fprintf(&b, "}\nlocal path = %q\n", path)
	b.WriteString(`local requests = {}
local i = 0
init = function(args)
  for j, body in ipairs(bodies) do
    requests[j] = wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  end
  i = math.random(#requests)
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
`)
	return os.WriteFile(file, []byte(b.String()), 0o600)
}
