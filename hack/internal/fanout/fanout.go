// Package fanout runs the benchmarks' setup work (creating thousands of objects) on a few
// goroutines.
package fanout

import (
	"sync"
	"sync/atomic"
)

// Run runs f for 0..n-1 on workers goroutines and returns the first error. A worker whose f
// fails stops; the others finish what they have started and then stop too.
func Run(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					failed.Store(true)
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
