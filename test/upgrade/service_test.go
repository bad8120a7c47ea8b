package upgrade

import (
	"io"
	"net"
	"slices"
	"sync"
	"testing"
)

// service stands for the token server's Service, as kube-proxy makes it: each connection goes to
// one of its endpoints, round robin, and is relayed byte for byte (TLS passes through to the
// token server, which serves the manager's certificate). Endpoints join and leave as pods become
// ready and terminate; a connection stays with the endpoint it went to.
type service struct {
	ln net.Listener

	mu        sync.Mutex
	endpoints []string
	next      int
}

// startService listens on a loopback port of its own until the test ends.
func startService(t *testing.T) *service {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &service{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.relay(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return s
}

// url is the Service's https URL: the install's in-cluster URL.
func (s *service) url() string { return "https://" + s.ln.Addr().String() }

func (s *service) add(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints = append(s.endpoints, endpoint)
}

func (s *service) remove(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints = slices.DeleteFunc(s.endpoints, func(e string) bool { return e == endpoint })
}

// relay pairs c with a connection to the next endpoint until either side closes; with no
// endpoint, c is closed at once, as a Service without ready pods refuses.
func (s *service) relay(c net.Conn) {
	defer c.Close()
	s.mu.Lock()
	if len(s.endpoints) == 0 {
		s.mu.Unlock()
		return
	}
	endpoint := s.endpoints[s.next%len(s.endpoints)]
	s.next++
	s.mu.Unlock()
	b, err := net.Dial("tcp", endpoint)
	if err != nil {
		return
	}
	defer b.Close()
	go func() {
		_, _ = io.Copy(b, c)
		_ = b.Close()
	}()
	_, _ = io.Copy(c, b)
}
