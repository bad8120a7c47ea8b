package rotatingclients

import (
	"testing"
	"time"
)

func TestAMountGivesANewSecretOnlyAfterTheDelay(t *testing.T) {
	now := time.Now()
	m := &Mount{id: "id", secret: "old", next: "new", nextAt: now.Add(time.Minute), changes: 1}
	if _, s := m.Get(now); s != "old" || m.Switched(now) {
		t.Fatalf("before the delay: %q, switched %v", s, m.Switched(now))
	}
	later := now.Add(time.Minute)
	if id, s := m.Get(later); id != "id" || s != "new" || !m.Switched(later) {
		t.Fatalf("after the delay: %q %q, switched %v", id, s, m.Switched(later))
	}
	if m.Changes() != 1 {
		t.Errorf("changes: %d", m.Changes())
	}
}

func TestNames(t *testing.T) {
	cs := Clients{N: 10000}
	if got := cs.SecretName(42); got != "client-00042-credentials" {
		t.Errorf("got %s", got)
	}
}
