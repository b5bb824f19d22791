// Command mongofind measures find by _id on a small collection (for `make
// bench`): N goroutines share one Go driver client, as an application's
// would, each running FindOne by a random _id and checking the document
// came back. The run is bounded in time and in operations. It reports
// operations per second and the 95th percentile of their latency, the same
// way against a member directly and through the proxy, so the two compare.
//
// The _ids are strings: FerretDB (the members here) looks a string or
// ObjectId _id up by its key, and scans the collection for any other.
//
// -setup fills the collection (dropped first) and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	uri := flag.String("uri", "mongodb://127.0.0.1:27017/", "member or proxy URI")
	clients := flag.Int("clients", 8, "concurrent goroutines sharing the driver client")
	dur := flag.Duration("time", 10*time.Second, "how long to measure")
	maxOps := flag.Int("max", 2_000_000, "stop after this many operations in all")
	docs := flag.Int("docs", 1000, "documents in the collection (_id \"doc000000\" up)")
	db := flag.String("db", "bench", "database")
	coll := flag.String("coll", "find", "collection")
	setup := flag.Bool("setup", false, "drop and fill the collection, then exit")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *dur+2*time.Minute)
	defer cancel()
	cl, err := mongo.Connect(options.Client().ApplyURI(*uri).SetMaxPoolSize(uint64(*clients) + 1))
	if err != nil {
		fail(err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	c := cl.Database(*db).Collection(*coll)
	if *setup {
		if err := fill(ctx, c, *docs); err != nil {
			fail(err)
		}
		return
	}
	q, p95, n, err := measure(ctx, c, *clients, *dur, *maxOps, *docs)
	if err != nil {
		fail(err)
	}
	fmt.Printf("qps=%.1f p95_ms=%.3f ops=%d clients=%d\n", q, p95, n, *clients)
}

func fill(ctx context.Context, c *mongo.Collection, n int) error {
	if err := c.Drop(ctx); err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	all := make([]any, n)
	for i := range all {
		all[i] = bson.D{{Key: "_id", Value: key(i)}, {Key: "k", Value: rand.IntN(n)}, {Key: "c", Value: fmt.Sprintf("%0120d", i)}}
	}
	if _, err := c.InsertMany(ctx, all); err != nil {
		return fmt.Errorf("insert %d documents: %w", n, err)
	}
	return nil
}

// measure runs the clients, each warmed up first (its pooled connection
// dialled and authenticated outside the measured time), then started
// together.
func measure(ctx context.Context, c *mongo.Collection, clients int, dur time.Duration, maxOps, docs int) (qps, p95ms float64, ops int, err error) {
	keys := make([]string, docs)
	for i := range keys {
		keys[i] = key(i)
	}
	find := func(i int) error {
		var d struct {
			ID string `bson:"_id"`
		}
		if err := c.FindOne(ctx, bson.D{{Key: "_id", Value: keys[i]}}).Decode(&d); err != nil {
			return fmt.Errorf("find _id %s: %w", keys[i], err)
		}
		if d.ID != keys[i] {
			return fmt.Errorf("find _id %s: got _id %s", keys[i], d.ID)
		}
		return nil
	}
	perClient := maxOps / clients
	lat := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var warm, done sync.WaitGroup
	start := make(chan struct{})
	var began time.Time
	for i := range clients {
		warm.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			var werr error
			for range 20 {
				if werr = find(rand.IntN(docs)); werr != nil {
					break
				}
			}
			warm.Done()
			<-start
			if werr != nil {
				errs[i] = werr
				return
			}
			l := make([]time.Duration, 0, min(perClient, 1<<16))
			deadline := began.Add(dur)
			for len(l) < perClient {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				if err := find(rand.IntN(docs)); err != nil {
					errs[i] = err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[i] = l
		}()
	}
	warm.Wait()
	began = time.Now()
	close(start)
	done.Wait()
	elapsed := time.Since(began)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return 0, 0, 0, errors.New("no operation completed")
	}
	slices.Sort(all)
	p := all[(len(all)*95+99)/100-1]
	return float64(len(all)) / elapsed.Seconds(), float64(p.Microseconds()) / 1000, len(all), nil
}

func key(i int) string { return fmt.Sprintf("doc%06d", i) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mongofind:", err)
	os.Exit(1)
}
