package clients_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// mongoChecks is every check a client of the Mongo matrix reports.
var mongoChecks = mongoAllChecks()

// goMongoDriver is the Go driver (go.mongodb.org/mongo-driver/v2), in the
// test's process, with options from the URI alone.
func goMongoDriver() *client {
	return &client{name: "go-mongo", checks: mongoChecks, missing: func() string { return "" }, run: runGoMongo}
}

// pyMongo is PyMongo (Debian's python3-pymongo, 3.11) with MongoClient(URI).
func pyMongo() *client {
	return &client{
		name:   "pymongo",
		checks: mongoChecks,
		missing: func() string {
			if err := exec.Command(pythonBin, "-c", "import pymongo").Run(); err != nil {
				return pythonBin + " cannot import pymongo: `make clients-deps` installs it (apt-get install -y python3-pymongo)"
			}
			return ""
		},
		run: func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
			return process(ctx, tg, resume, emit, pythonBin, filepath.Join("python", "mongo_workload.py"), mode)
		},
	}
}

// nodeMongo is Node's mongodb driver (6.x, installed into node/ by npm ci)
// with new MongoClient(URI).
func nodeMongo() *client {
	return &client{
		name:   "node-mongodb",
		checks: mongoChecks,
		missing: func() string {
			if _, err := exec.LookPath("node"); err != nil {
				return "node not found: `make clients-deps` installs it (apt-get install -y nodejs npm)"
			}
			if _, err := os.Stat(filepath.Join("node", "node_modules", "mongodb", "package.json")); err != nil {
				return "the mongodb package is not installed in clients/node: `make clients-deps` installs it (npm ci there)"
			}
			return ""
		},
		run: func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
			return process(ctx, tg, resume, emit, "node", filepath.Join("node", "mongo_workload.js"), mode)
		},
	}
}

func runGoMongo(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
	// A command monitor changes nothing the driver does; it counts the
	// getMores, so the cursor check shows it read past the first batch.
	var getMores atomic.Int64
	mon := &event.CommandMonitor{Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
		if e.CommandName == "getMore" {
			getMores.Add(1)
		}
	}}
	cl, err := mongo.Connect(options.Client().ApplyURI(mongoURI(tg)).SetMonitor(mon))
	if err != nil {
		return err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	db := cl.Database(tg.database)
	switch mode {
	case "workload":
		if !check(emit, "connect", func() error {
			if err := cl.Ping(ctx, nil); err != nil {
				return err
			}
			_, err := db.ListCollectionNames(ctx, bson.D{})
			return err
		}()) {
			return nil
		}
		check(emit, "crud", goMongoCRUD(ctx, db.Collection(tg.table+"_crud")))
		check(emit, "cursor", func() error {
			before := getMores.Load()
			if err := goMongoCursor(ctx, db.Collection(tg.table+"_cursor")); err != nil {
				return err
			}
			n := getMores.Load() - before
			if n == 0 {
				return errors.New("every document came in the first batch: no getMore was sent")
			}
			emit(fmt.Sprintf("info cursor: %d documents with %d getMore", mongoCursorDocs, n))
			return nil
		}())
		check(emit, "insert_many", func() error {
			docs := make([]any, mongoInsertManyDocs)
			for i := range docs {
				docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "n", Value: i}}
			}
			r, err := db.Collection(tg.table+"_many").InsertMany(ctx, docs)
			if err != nil {
				return err
			}
			if len(r.InsertedIDs) != mongoInsertManyDocs {
				return fmt.Errorf("%d inserted ids, want %d", len(r.InsertedIDs), mongoInsertManyDocs)
			}
			return nil
		}())
		check(emit, "errors", func() error {
			coll := db.Collection(tg.table + "_errors")
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
				return fmt.Errorf("first insert: %w", err)
			}
			_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
			var we mongo.WriteException
			if !errors.As(err, &we) || len(we.WriteErrors) != 1 || we.WriteErrors[0].Code != 11000 || !mongo.IsDuplicateKeyError(err) {
				return fmt.Errorf("second insert of _id 1: got %v (%T), want a mongo.WriteException with code 11000", err, err)
			}
			return nil
		}())
	case "read_preference":
		check(emit, "read_preference", goMongoReadPref(ctx, db.Collection(tg.table+"_rp")))
	case "retryable":
		coll := db.Collection(tg.table + "_retry")
		// A first round trip, so that the write below is the only thing
		// the test's fault can hit.
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "warm"}}); err != nil {
			emit("fail retryable: warm-up insert: " + err.Error())
			return nil
		}
		emit("ready")
		<-resume
		check(emit, "retryable", func() error {
			r, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "retry"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}},
				options.UpdateOne().SetUpsert(true))
			if err != nil {
				return fmt.Errorf("upsert: %w", err)
			}
			if r.UpsertedCount != 1 {
				return fmt.Errorf("upsert: %+v, want one document upserted (the first attempt's reply)", r)
			}
			var got struct{ N int }
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "retry"}}).Decode(&got); err != nil || got.N != 1 {
				return fmt.Errorf("read back: n %d (%v), want 1: applied exactly once", got.N, err)
			}
			return nil
		}())
	case "transaction":
		check(emit, "transaction", func() error {
			sess, err := cl.StartSession()
			if err != nil {
				return err
			}
			defer sess.EndSession(context.Background())
			coll := db.Collection(tg.table + "_txn")
			_, err = sess.WithTransaction(ctx, func(ctx context.Context) (any, error) {
				return coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
			})
			var se mongo.ServerError
			if !errors.As(err, &se) || !se.HasErrorCode(20) {
				return fmt.Errorf("transaction: %v (%T), want a server error with code 20 (IllegalOperation)", err, err)
			}
			emit("info transaction refused: " + err.Error())
			if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
				return fmt.Errorf("after the refused transaction: %d documents (%v), want 0", n, err)
			}
			return nil
		}())
	case "promote":
		coll := db.Collection(tg.table+"_promote", options.Collection().SetWriteConcern(writeconcern.Majority()))
		promoteLoop(tg, emit, func(id int) error {
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: "p"}}); err != nil {
				return err
			}
			var got struct{ V string }
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&got); err != nil || got.V != "p" {
				return fmt.Errorf("read back %d: %+v, %v", id, got, err)
			}
			return nil
		})
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

// goMongoReadPref reads the document that names the member holding it
// with each read preference (mongoReadPrefPhase set it up).
func goMongoReadPref(ctx context.Context, coll *mongo.Collection) error {
	primary, secondaries := os.Getenv("DBR_PRIMARY"), strings.Split(os.Getenv("DBR_SECONDARIES"), ",")
	if primary == "" || len(secondaries) != 2 {
		return errors.New("DBR_PRIMARY and DBR_SECONDARIES (two names) must be set")
	}
	seen := map[string]map[string]int{}
	for _, rp := range []*readpref.ReadPref{readpref.Primary(), readpref.Secondary(), readpref.Nearest()} {
		mode := rp.Mode().String()
		seen[mode] = map[string]int{}
		c := coll.Clone(options.Collection().SetReadPreference(rp))
		for range 20 {
			var got struct{ Member string }
			if err := c.FindOne(ctx, bson.D{{Key: "_id", Value: "rp"}}).Decode(&got); err != nil {
				return fmt.Errorf("read with %s: %w", mode, err)
			}
			seen[mode][got.Member]++
		}
	}
	return readPrefVerdict(primary, secondaries, seen)
}

// readPrefVerdict judges what each mode's reads saw (member -> reads):
// primary only the primary, secondary only and both secondaries, nearest
// at least two members.
func readPrefVerdict(primary string, secondaries []string, seen map[string]map[string]int) error {
	desc := fmt.Sprintf("primary %v, secondary %v, nearest %v", seen["primary"], seen["secondary"], seen["nearest"])
	if len(seen["primary"]) != 1 || seen["primary"][primary] == 0 {
		return fmt.Errorf("primary reads not all from %s: %s", primary, desc)
	}
	if len(seen["secondary"]) != 2 || seen["secondary"][secondaries[0]] == 0 || seen["secondary"][secondaries[1]] == 0 {
		return fmt.Errorf("secondary reads not from both of %v and only them: %s", secondaries, desc)
	}
	if len(seen["nearest"]) < 2 {
		return fmt.Errorf("nearest reads all from one member: %s", desc)
	}
	return nil
}

func goMongoCRUD(ctx context.Context, coll *mongo.Collection) error {
	type doc struct {
		ID int    `bson:"_id"`
		V  string `bson:"v"`
	}
	if _, err := coll.InsertOne(ctx, doc{ID: 1, V: "written"}); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	var got doc
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil || got.V != "written" {
		return fmt.Errorf("find after insert: %+v, %v; want v written", got, err)
	}
	u, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "updated"}}}})
	if err != nil || u.MatchedCount != 1 || u.ModifiedCount != 1 {
		return fmt.Errorf("update: %+v, %v; want 1 matched, 1 modified", u, err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil || got.V != "updated" {
		return fmt.Errorf("find after update: %+v, %v; want v updated", got, err)
	}
	d, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil || d.DeletedCount != 1 {
		return fmt.Errorf("delete: %+v, %v; want 1 deleted", d, err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("find after delete: %v, want no document", err)
	}
	return nil
}

// goMongoCursor writes mongoCursorDocs documents, then reads them back with
// one find at the driver's default batch size (the server's first batch,
// then getMore), each _id exactly once.
func goMongoCursor(ctx context.Context, coll *mongo.Collection) error {
	docs := make([]any, mongoCursorDocs)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "n", Value: i}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("find: %w", err)
	}
	defer func() { _ = cur.Close(context.Background()) }()
	seen := make([]bool, mongoCursorDocs)
	n := 0
	for cur.Next(ctx) {
		var d struct {
			ID int64 `bson:"_id"`
		}
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("document %d: %w", n, err)
		}
		if d.ID < 0 || d.ID >= mongoCursorDocs {
			return fmt.Errorf("document %d: _id %d was never written", n, d.ID)
		}
		if seen[d.ID] {
			return fmt.Errorf("document %d: _id %d seen twice", n, d.ID)
		}
		seen[d.ID] = true
		n++
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("after %d documents: %w", n, err)
	}
	if n != mongoCursorDocs {
		return fmt.Errorf("read %d documents, want %d", n, mongoCursorDocs)
	}
	return nil
}
