package chaos

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// MongoLoad is a w:majority insert load through a driver: an insert of a
// new _id every `every` (as requests arrive at a service, so one write
// stuck on a hung member does not stop the others), at most maxInFlight at
// once, each with a deadline of a minute. It records every acknowledgement
// and every error a driver call returned; the fault tests and cmd/chaos
// judge a fault by them.
type MongoLoad struct {
	coll     *mongo.Collection
	next     atomic.Int64
	inFlight atomic.Int64
	wg       sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	acks     []MongoAck
	errs     []error
	skipped  int // ticks at which maxInFlight writes were in flight
}

// MongoAck is one acknowledged insert.
type MongoAck struct {
	ID         int64
	Start, End time.Time
}

// StartMongoLoad starts inserting into app.<collection> through c until
// Finish or ctx's end.
func StartMongoLoad(ctx context.Context, c *mongo.Client, collection string, every time.Duration, maxInFlight int) *MongoLoad {
	l := &MongoLoad{stop: make(chan struct{}),
		coll: c.Database("app").Collection(collection, options.Collection().SetWriteConcern(writeconcern.Majority()))}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if l.inFlight.Load() >= int64(maxInFlight) {
				l.mu.Lock()
				l.skipped++
				l.mu.Unlock()
				continue
			}
			l.inFlight.Add(1)
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer l.inFlight.Add(-1)
				id := l.next.Add(1)
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				start := time.Now()
				_, err := l.coll.InsertOne(wctx, bson.D{{Key: "_id", Value: id}})
				end := time.Now()
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.errs = append(l.errs, fmt.Errorf("insert %d (%s): %w", id, end.Sub(start).Round(time.Millisecond), err))
					return
				}
				l.acks = append(l.acks, MongoAck{id, start, end})
			}()
		}
	}()
	return l
}

// Acked counts the acknowledged inserts.
func (l *MongoLoad) Acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// AckedAfter counts the inserts begun after from and acknowledged.
func (l *MongoLoad) AckedAfter(from time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acks {
		if a.Start.After(from) {
			n++
		}
	}
	return n
}

// WritesAgain is how long after at the first insert begun after at was
// acknowledged (0: none was).
func (l *MongoLoad) WritesAgain(at time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acks {
		if a.Start.After(at) && (first.IsZero() || a.End.Before(first)) {
			first = a.End
		}
	}
	if first.IsZero() {
		return 0
	}
	return first.Sub(at)
}

// LongestPause is the longest time between two consecutive
// acknowledgements.
func (l *MongoLoad) LongestPause() time.Duration {
	l.mu.Lock()
	ends := make([]time.Time, len(l.acks))
	for i, a := range l.acks {
		ends[i] = a.End
	}
	l.mu.Unlock()
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var longest time.Duration
	for i := 1; i < len(ends); i++ {
		longest = max(longest, ends[i].Sub(ends[i-1]))
	}
	return longest
}

// Slowest is the longest an insert waited for its acknowledgement.
func (l *MongoLoad) Slowest() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, a := range l.acks {
		d = max(d, a.End.Sub(a.Start))
	}
	return d
}

// Errors are the errors driver calls returned, in order.
func (l *MongoLoad) Errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// Skipped counts the ticks at which maxInFlight inserts were in flight.
func (l *MongoLoad) Skipped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.skipped
}

// Finish stops launching, waits for the inserts in flight (each bounded by
// its minute) and returns the acknowledged ids. It may be called again.
func (l *MongoLoad) Finish() []int64 {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]int64, len(l.acks))
	for i, a := range l.acks {
		ids[i] = a.ID
	}
	return ids
}
