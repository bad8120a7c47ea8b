package e2e

import (
	"sync"
	"sync/atomic"
	"time"
)

// consumer calls request again and again, a pause apart, counting successes and failures, until
// stopped; at most a million times or three minutes, so that it always ends by itself.
type consumer struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stopCh     chan struct{}
	wg         sync.WaitGroup
}

func startConsumer(pause time.Duration, request func() error) *consumer {
	c := &consumer{stopCh: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		deadline := time.Now().Add(3 * time.Minute)
		for i := 0; i < 1_000_000 && time.Now().Before(deadline); i++ {
			select {
			case <-c.stopCh:
				return
			default:
			}
			if err := request(); err != nil {
				c.failed.Add(1)
				c.firstErr.CompareAndSwap(nil, err.Error())
			} else {
				c.ok.Add(1)
			}
			time.Sleep(pause)
		}
	}()
	return c
}

// stop ends the loop and waits for it.
func (c *consumer) stop() {
	close(c.stopCh)
	c.wg.Wait()
}
