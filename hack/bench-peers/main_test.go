package main

import (
	"strings"
	"testing"
)

// benchTokenOutput is the part of hack/bench-token's output that bench-peers reads, in the
// format its Printf calls write.
const benchTokenOutput = `signing-only ceiling: go test -bench BenchmarkSignAccessToken on 2 cores...

clients cached:           1000
load:                     wrk -t1 -c16 -d20s, form bodies cycling through all clients, narrowing half: false, ServiceAccount assertions: false
signing-only ceiling:     21432 signatures/s (93.3 µs/op wall on 2 cores)

issuance limit off (--issuance-per-minute=0)
wrk: Running 20s test
tokens/s:                 7228
latency p50 / p99:        1.82ms / 239.88ms
non-2xx responses:        0 (socket errors: none)
throughput / ceiling:     34%
token server RSS:         40 MiB idle with 1000 clients, 46 MiB after the load, 55 MiB peak

issuance limit on (default flags)
wrk: Running 20s test
tokens/s:                 7639
latency p50 / p99:        1.70ms / 182.16ms
non-2xx responses:        3 (socket errors: connect 0, read 0, write 0, timeout 2)
throughput / ceiling:     36%
token server RSS:         39 MiB idle with 1000 clients, 45 MiB after the load, 50 MiB peak
`

func TestParseBenchTokenReadsEachRunsFiguresFromItsOwnBlock(t *testing.T) {
	rows, err := parseBenchToken(benchTokenOutput)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want the limit-off and limit-on runs", len(rows))
	}
	off, on := rows[0], rows[1]
	if off.rps != 7228 || off.p50 != "1.82ms" || off.p99 != "239.88ms" || off.non2xx != "0" || off.socketErrors != "none" {
		t.Errorf("limit-off row = %+v", off)
	}
	if on.rps != 7639 || on.p50 != "1.70ms" || on.p99 != "182.16ms" || on.non2xx != "3" || on.socketErrors != "connect 0, read 0, write 0, timeout 2" {
		t.Errorf("limit-on row = %+v", on)
	}
	if off.rssAfter != 46<<10 || off.rssPeak != 55<<10 || on.rssAfter != 45<<10 || on.rssPeak != 50<<10 {
		t.Errorf("RSS in KiB: off %d/%d, on %d/%d", off.rssAfter, off.rssPeak, on.rssAfter, on.rssPeak)
	}
	if want := "signing-only ceiling of the same run: 21432 signatures/s (93.3 µs/op wall on 2 cores)"; off.note != want {
		t.Errorf("note = %q, want %q", off.note, want)
	}
}

func TestParseBenchTokenFailsWhenARunLacksAFigure(t *testing.T) {
	out := strings.Replace(benchTokenOutput, "latency p50 / p99:        1.70ms / 182.16ms\n", "", 1)
	if _, err := parseBenchToken(out); err == nil {
		t.Fatal("parsed a limit-on run without its latency")
	}
}

func TestParseBenchTokenFailsWhenARunIsMissing(t *testing.T) {
	out := benchTokenOutput[:strings.Index(benchTokenOutput, "\nissuance limit on")]
	if _, err := parseBenchToken(out); err == nil {
		t.Fatal("parsed an output without the limit-on run")
	}
}
