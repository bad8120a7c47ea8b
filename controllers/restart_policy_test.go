package controllers

import (
	"strings"
	"testing"

	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

func TestDecideRestart(t *testing.T) {
	const client, version = "billing", "abcdefghijklmnop"
	optedIn := func(optIn, record string) RestartWorkload {
		return RestartWorkload{Exists: true, OptIn: optIn, Record: record}
	}
	for sentence, tc := range map[string]struct {
		version    string
		w          RestartWorkload
		want       RestartAction
		wantRecord string
	}{
		"a workload that does not exist is missing":                                   {version, RestartWorkload{}, RestartMissing, ""},
		"a workload being deleted is missing":                                         {version, RestartWorkload{Exists: true, Deleting: true, OptIn: client}, RestartMissing, ""},
		"a workload without the opt-in annotation is refused":                         {version, optedIn("", ""), RestartRefused, ""},
		"a workload that opted in for another client is refused":                      {version, optedIn("payments", ""), RestartRefused, ""},
		"a workload that names a client whose name contains this one is refused":      {version, optedIn("billing-2,xbilling", ""), RestartRefused, ""},
		"a refused workload is not restarted even when its record is stale":           {version, optedIn("payments", "billing=old"), RestartRefused, ""},
		"a workload that opted in and never recorded a version is restarted once":     {version, optedIn(client, ""), RestartNow, "billing=" + version},
		"a workload restarted for an earlier credential is restarted":                 {version, optedIn(client, "billing=old"), RestartNow, "billing=" + version},
		"a workload restarted for the current credential is left alone":               {version, optedIn(client, "billing="+version), RestartNone, ""},
		"a workload that lists several clients, by commas, is restarted for this one": {version, optedIn("payments,billing", ""), RestartNow, "billing=" + version},
		"a workload that lists several clients, by spaces, is restarted for this one": {version, optedIn("payments billing", ""), RestartNow, "billing=" + version},
		"a restart keeps the versions recorded for the other clients, sorted":         {version, optedIn("payments,billing", "payments=p1 billing=old"), RestartNow, "billing=" + version + " payments=p1"},
		"a garbled record only makes this client restart once more":                   {version, optedIn(client, "=x billing= junk"), RestartNow, "billing=" + version},
		"a client whose Secret carries no credential restarts nothing":                {"", optedIn(client, ""), RestartNone, ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			got := DecideRestart(client, tc.version, tc.w)
			if got.Action != tc.want || got.Record != tc.wantRecord {
				t.Fatalf("got %q with record %q (%s), want %q with record %q", got.Action, got.Record, got.Why, tc.want, tc.wantRecord)
			}
			if got.Why == "" {
				t.Fatal("a decision must say why")
			}
		})
	}
}

// The record of a restart is what the next decision reads: deciding again on what a restart
// wrote restarts nothing, so that no reconcile, however many, restarts twice for one credential.
func TestARestartRecordedOnTheWorkloadIsNotRepeated(t *testing.T) {
	first := DecideRestart("billing", "v1", RestartWorkload{Exists: true, OptIn: "billing", Record: "payments=p1"})
	if first.Action != RestartNow {
		t.Fatalf("first decision: %q", first.Action)
	}
	again := DecideRestart("billing", "v1", RestartWorkload{Exists: true, OptIn: "billing", Record: first.Record})
	if again.Action != RestartNone {
		t.Fatalf("deciding again on the record %q: %q (%s)", first.Record, again.Action, again.Why)
	}
}

// A credential's version on a workload is a short prefix of its hash, never the credential.
func TestRestartVersionIsAShortPrefixOfTheHash(t *testing.T) {
	secret := "s3cr3t-that-is-long-enough-for-the-test-0123456789"
	v := RestartVersion(credentials.Hash(secret))
	if len(v) != restartVersionLength || strings.Contains(v, ":") || !strings.HasPrefix(credentials.Hash(secret), credentials.HashPrefix+v) {
		t.Fatalf("version %q of hash %q", v, credentials.Hash(secret))
	}
	if RestartVersion("") != "" {
		t.Fatal("no fingerprint must give no version")
	}
	if v == RestartVersion(credentials.Hash(secret+"x")) {
		t.Fatal("two credentials gave one version")
	}
}
