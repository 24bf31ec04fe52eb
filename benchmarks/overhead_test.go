package main

import (
	"context"
	"fmt"
	"testing"
)

func noopTask(context.Context) error { return nil }

// BenchmarkOverhead measures what each contender adds to a Fanout of no-op
// tasks: the cost of scheduling, not of work. Serial mode calls Fanout from
// one goroutine; parallel mode from GOMAXPROCS goroutines at once, each its
// own request, all on one pool.
//
//	go test -run '^$' -bench Overhead -benchmem -count 6 | go tool benchstat -col /impl -
//
// Scenario 1 of the suite runs it as a subprocess and summarises it.
func BenchmarkOverhead(b *testing.B) {
	for _, f := range contenders {
		for _, n := range overheadSizes {
			for _, mode := range []string{"serial", "parallel"} {
				b.Run(fmt.Sprintf("impl=%s/tasks=%d/mode=%s", f.Name, n, mode), func(b *testing.B) {
					benchOverhead(b, f, n, mode == "parallel")
				})
			}
		}
	}
}

func benchOverhead(b *testing.B, f Factory, n int, parallel bool) {
	c, err := f.New(PoolConfig{Workers: overheadWorkers})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		b.StopTimer()
		c.Close()
	}()
	tasks := make([]Task, n)
	for i := range tasks {
		tasks[i] = noopTask
	}
	b.ReportAllocs()
	if !parallel {
		// One request for the whole loop, as a handler that fans out
		// repeatedly would be: the per-request setup (reqpool's handle) is
		// not what this measures.
		ctx, release := c.Request(context.Background())
		defer release()
		for b.Loop() {
			if err := c.Fanout(ctx, tasks); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx, release := c.Request(context.Background())
		defer release()
		for pb.Next() {
			if err := c.Fanout(ctx, tasks); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
