package tokenserver

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// The client's address is the connection's unless the connection comes from a trusted proxy;
// then it is the first hop of the proxies' header, from the right, that is not a trusted proxy.
func TestTheClientAddressIsTheFirstUntrustedHopFromTheRightBehindTrustedProxies(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, fd00::/8,192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	xff := ClientAddresses{Trusted: trusted}
	fwd := ClientAddresses{Trusted: trusted, Header: HeaderForwarded}
	for _, tc := range []struct {
		name    string
		by      ClientAddresses
		peer    string
		headers map[string][]string
		want    string
	}{
		{"without trusted proxies the connection's address is the client's, whatever the header says", ClientAddresses{}, "203.0.113.9:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "203.0.113.9"},
		{"a client that sends X-Forwarded-For itself, not through a trusted proxy, is its connection's address", xff, "203.0.113.9:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "203.0.113.9"},
		{"a client that sends Forwarded itself is its connection's address", fwd, "203.0.113.9:5000", map[string][]string{"Forwarded": {"for=198.51.100.1"}}, "203.0.113.9"},
		{"a trusted proxy names the client in X-Forwarded-For", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "198.51.100.1"},
		{"a hop that the client wrote to the left of the proxy's is ignored (spoofing through the proxy)", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"1.2.3.4, 198.51.100.1"}}, "198.51.100.1"},
		{"trusted hops are skipped from the right, through a chain of proxies", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"1.2.3.4, 198.51.100.1, 10.9.9.9", "192.0.2.7"}}, "198.51.100.1"},
		{"a client naming a trusted address to the left is still itself", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"10.0.0.1, 198.51.100.1"}}, "198.51.100.1"},
		{"a malformed hop that the client wrote to the left of its own is never read", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"\"garbage,, 198.51.100.1"}}, "198.51.100.1"},
		{"a malformed hop written by a trusted proxy falls back to the connection's address", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1, not-an-address"}}, "10.1.2.3"},
		{"an empty hop written by a trusted proxy falls back to the connection's address", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1,"}}, "10.1.2.3"},
		{"a trusted proxy without the header is the client", xff, "10.1.2.3:5000", nil, "10.1.2.3"},
		{"when every hop is trusted the leftmost is the client", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"10.7.7.7, 10.8.8.8"}}, "10.7.7.7"},
		{"an IPv6 hop in brackets with a port is read", xff, "[fd00::1]:5000", map[string][]string{"X-Forwarded-For": {"[2001:db8::17]:4711"}}, "2001:db8::17"},
		{"an IPv4-mapped IPv6 hop is its IPv4 address", xff, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"::ffff:198.51.100.1"}}, "198.51.100.1"},
		{"with Forwarded configured, X-Forwarded-For is not read", fwd, "10.1.2.3:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "10.1.2.3"},
		{"with X-Forwarded-For configured, a Forwarded that the client sent through the proxy is not read", xff, "10.1.2.3:5000", map[string][]string{"Forwarded": {"for=1.2.3.4"}, "X-Forwarded-For": {"198.51.100.1"}}, "198.51.100.1"},
		{"Forwarded's for= is read from the right, with other parameters and quoted IPv6", fwd, "10.1.2.3:5000", map[string][]string{"Forwarded": {`for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1`, "For=10.2.2.2"}}, "2001:db8:cafe::17"},
		{"an obfuscated or unknown node written by a trusted proxy falls back to the connection's address", fwd, "10.1.2.3:5000", map[string][]string{"Forwarded": {"for=198.51.100.1, for=unknown"}}, "10.1.2.3"},
		{"a Forwarded element without for= falls back to the connection's address", fwd, "10.1.2.3:5000", map[string][]string{"Forwarded": {"proto=https"}}, "10.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", nil)
			r.RemoteAddr = tc.peer
			for k, vs := range tc.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			if got := tc.by.of(r); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// --trusted-proxies takes CIDRs and single addresses, and refuses anything else with the flag's
// name.
func TestTrustedProxiesAreCIDRsOrAddressesAndAnythingElseIsRefused(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8,192.0.2.7,fd00::/8,::ffff:10.0.0.0/104,")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.0.0.0/8")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,proxy.example.com"); err == nil {
		t.Fatal("a host name was accepted")
	}
}

// The debug log names the client that a trusted proxy names, not the proxy.
func TestARefusalBehindATrustedProxyIsLoggedWithTheClientsAddress(t *testing.T) {
	var logs logLines
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	s, _ := serveWith(t, mapClients{goodID: testClient(goodID, goodSecret)}, Config{Log: logs.logger(1), ClientAddresses: ClientAddresses{Trusted: trusted}})
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader("grant_type=client_credentials&client_id="+goodID+"&client_secret=wrong"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	r.RemoteAddr = "10.0.0.2:1000"
	s.Handler().ServeHTTP(httptest.NewRecorder(), r)
	if got := logs.all(); !strings.Contains(got, `"remote"="198.51.100.1"`) {
		t.Fatalf("the debug log does not name the forwarded client:\n%s", got)
	}
}

// The flags of the client's address and of the failure limit: on by default with the documented
// values, trusting no proxy; values that cannot work are refused.
func TestTheFailureLimitIsOffByDefaultAndFlagsThatCannotWorkAreRefused(t *testing.T) {
	for sentence, tc := range map[string]struct {
		args  []string
		limit FailureLimit
		addrs int
		ok    bool
	}{
		"by default the limit is off and no proxy is trusted":   {nil, FailureLimit{Burst: DefaultFailureBurst, Sources: DefaultFailureSources}, 0, true},
		"a rate turns the limit on":                             {[]string{"--failure-rate=10"}, FailureLimit{Rate: SuggestedFailureRate, Burst: DefaultFailureBurst, Sources: DefaultFailureSources}, 0, true},
		"an IPv4-mapped network shorter than /96 is refused":    {[]string{"--trusted-proxies=::ffff:10.0.0.0/64"}, FailureLimit{}, 0, false},
		"a rate of 0 turns the limit off":                       {[]string{"--failure-rate=0"}, FailureLimit{Burst: DefaultFailureBurst, Sources: DefaultFailureSources}, 0, true},
		"trusted proxies and the Forwarded header":              {[]string{"--trusted-proxies=10.0.0.0/8,fd00::/8", "--trusted-proxy-header=Forwarded"}, FailureLimit{Burst: DefaultFailureBurst, Sources: DefaultFailureSources}, 2, true},
		"a trusted proxy that is not a network is refused":      {[]string{"--trusted-proxies=lb.example.com"}, FailureLimit{}, 0, false},
		"another header is refused":                             {[]string{"--trusted-proxy-header=X-Real-IP"}, FailureLimit{}, 0, false},
		"a burst of 0, which would refuse everyone, is refused": {[]string{"--failure-burst=0"}, FailureLimit{}, 0, false},
		"a negative rate is refused":                            {[]string{"--failure-rate=-1"}, FailureLimit{}, 0, false},
		"a rate that is not a number is refused":                {[]string{"--failure-rate=NaN"}, FailureLimit{}, 0, false},
		"an infinite rate is refused":                           {[]string{"--failure-rate=+Inf"}, FailureLimit{}, 0, false},
		"a rate under one a day is refused":                     {[]string{"--failure-rate=1e-300"}, FailureLimit{}, 0, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			o, err := ParseArgs(flag.NewFlagSet("t", flag.ContinueOnError), append([]string{"--issuer-url=https://m2m.example"}, tc.args...))
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if tc.ok && (o.FailureLimit != tc.limit || len(o.ClientAddresses.Trusted) != tc.addrs) {
				t.Fatalf("got %+v %+v", o.FailureLimit, o.ClientAddresses)
			}
		})
	}
}
