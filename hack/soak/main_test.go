package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/hack/internal/tokenload"
)

func TestWarmUp(t *testing.T) {
	for d, want := range map[time.Duration]time.Duration{30 * time.Minute: 2 * time.Minute, 4 * time.Minute: 24 * time.Second} {
		if got := warmUp(d); got != want {
			t.Errorf("warmUp(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestJudge(t *testing.T) {
	steady := []sample{{0, 50 << 10}, {10 * time.Second, 70 << 10}, {20 * time.Second, 80 << 10}, {30 * time.Second, 85 << 10}, {40 * time.Second, 87 << 10}}
	ok := tokenload.Result{OK: 1000, Non2xx: map[int]int64{}}
	for _, tc := range []struct {
		name    string
		samples []sample
		res     tokenload.Result
		rotated int
		pass    bool
		fail    string
	}{
		{"all good: the baseline is the first sample at or after the warm-up", steady, ok, 10, true, ""},
		{"RSS grew more than 10%", append(steady[:4:4], sample{40 * time.Second, 95 << 10}), ok, 10, false, "RSS"},
		{"RSS fell more than 10%", append(steady[:4:4], sample{40 * time.Second, 70 << 10}), ok, 10, false, "RSS"},
		{"no sample after the warm-up", steady[:2], ok, 10, false, "RSS"},
		{"a non-2xx response", steady, tokenload.Result{OK: 999, Non2xx: map[int]int64{http.StatusUnauthorized: 1}}, 10, false, "non-2xx"},
		{"a request without an answer", steady, tokenload.Result{OK: 999, TransportErrors: 1, Non2xx: map[int]int64{}}, 10, false, "non-2xx"},
		{"a client not rotated once", steady, ok, 9, false, "rotated"},
	} {
		v := judge(tc.samples, 20*time.Second, tc.res, tc.rotated, 10, 10)
		if v.pass != tc.pass {
			t.Errorf("%s: pass %v, want %v:\n%s", tc.name, v.pass, tc.pass, strings.Join(v.lines, "\n"))
		}
		for _, line := range v.lines {
			if strings.HasPrefix(line, "[FAIL]") && !strings.Contains(line, tc.fail) {
				t.Errorf("%s: unexpected %s", tc.name, line)
			}
		}
	}
}

func TestFormatSamples(t *testing.T) {
	var samples []sample
	for i := range 7 {
		samples = append(samples, sample{time.Duration(i) * 10 * time.Second, 80 << 10})
	}
	got := formatSamples(samples)
	if lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "1m0s") {
		t.Errorf("got:\n%s", got)
	}
}
