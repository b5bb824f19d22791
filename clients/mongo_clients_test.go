package clients_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
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

func runGoMongo(ctx context.Context, mode string, tg target, _ <-chan struct{}, emit func(string)) error {
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
	default:
		return fmt.Errorf("unknown mode %q", mode)
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
