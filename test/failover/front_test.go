package failover

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// replicaHeader names, in each response through the front, the replica that answered, so
// that the test can tell which one served a request. The test adds it; a Service would not.
const replicaHeader = "X-Test-Replica"

// front stands for the Service in front of the token-server pods, as kube-proxy makes it: each
// client connection is paired with one connection to one replica, chosen round robin, so a
// replica's death reaches the clients on its connections as a connection error, not as an
// HTTP status. (It reads requests and responses only to label each response with its replica.)
//
// A replica that refuses a connection is taken out of the rotation at once and the connection
// goes to the next replica: what a Service's endpoints do once the readiness probe of a dead
// pod has failed. A cluster takes seconds for that (the probe's period times its failure
// threshold, then the endpoints' propagation), and in those seconds plain kube-proxy keeps
// sending new connections to the dead pod, which refuses them; a client whose retry lands there
// too fails. This front does not model that window; fronts that retry a refused connection on
// another replica (nginx's proxy_next_upstream, Envoy's connect-failure retry) behave as it does.
type front struct {
	ln       net.Listener
	replicas []string // addresses

	mu   sync.Mutex
	next int
	out  map[int]time.Time // replicas taken out of the rotation, and when
}

func startFront(ln net.Listener, replicas []string) *front {
	f := &front{ln: ln, replicas: replicas, out: map[int]time.Time{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *front) Close() error { return f.ln.Close() }

// takenOut returns when replica i was taken out of the rotation, if it was.
func (f *front) takenOut(i int) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.out[i]
	return at, ok
}

// dial connects to the next replica in the rotation, taking out those that refuse.
func (f *front) dial() (int, net.Conn, error) {
	for {
		f.mu.Lock()
		i, ok := -1, false
		for range f.replicas {
			i, f.next = f.next, (f.next+1)%len(f.replicas)
			if _, gone := f.out[i]; !gone {
				ok = true
				break
			}
		}
		f.mu.Unlock()
		if !ok {
			return 0, nil, errors.New("no replica left")
		}
		c, err := net.Dial("tcp", f.replicas[i])
		if errors.Is(err, syscall.ECONNREFUSED) {
			f.mu.Lock()
			if _, gone := f.out[i]; !gone {
				f.out[i] = time.Now()
			}
			f.mu.Unlock()
			continue
		}
		return i, c, err
	}
}

// serve relays one client connection's requests to one replica until either side closes it;
// then it closes both, without an answer to a request the replica did not answer.
func (f *front) serve(c net.Conn) {
	defer c.Close()
	i, b, err := f.dial()
	if err != nil {
		return
	}
	defer b.Close()
	reqs := make(chan *http.Request, 1)
	go func() {
		// The replica's connection closes with the client's, so that the loop below ends.
		defer b.Close()
		defer close(reqs)
		fromClient := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(fromClient)
			if err != nil {
				return
			}
			reqs <- req
			if err := req.Write(b); err != nil {
				return
			}
		}
	}()
	fromReplica := bufio.NewReader(b)
	for {
		// Waiting on the replica, not on the client, passes a replica's close on to the
		// client at once, on an idle connection too, as kube-proxy's NAT does.
		if _, err := fromReplica.Peek(1); err != nil {
			return
		}
		req, ok := <-reqs
		if !ok {
			return
		}
		resp, err := http.ReadResponse(fromReplica, req)
		if err != nil {
			return
		}
		resp.Header.Set(replicaHeader, strconv.Itoa(i))
		err = resp.Write(c)
		resp.Body.Close()
		if err != nil || req.Close || resp.Close {
			return
		}
	}
}
