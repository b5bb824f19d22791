package mongo

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// pymongoResult is the JSON line testdata/pymongo_client.py prints.
type pymongoResult struct {
	Version        string  `json:"pymongo"`
	Ping           float64 `json:"ping"`
	Msg            string  `json:"msg"`
	MaxWireVersion int     `json:"maxWireVersion"`
	ServerVersion  string  `json:"server_version"`
	FindCode       int     `json:"find_code"`
	ErrorCode      int     `json:"error_code"`
	Error          string  `json:"error"`
	Found          string  `json:"found"`
	Modified       int     `json:"modified"`
	Updated        string  `json:"updated"`
	Deleted        int     `json:"deleted"`
	Batched        int     `json:"batched"`
}

// runPyMongo runs the Debian python3-pymongo (3.11, the oldest driver the
// proxy promises) against uri. A missing client is a failure, never a
// skip: `make clients-deps` installs it.
func runPyMongo(t *testing.T, uri string, args ...string) pymongoResult {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import pymongo").Run(); err != nil {
		t.Fatalf("PyMongo is not installed (%v): run make clients-deps (apt python3-pymongo)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", append([]string{"testdata/pymongo_client.py", uri}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("pymongo_client.py: %v\n%s%s", err, out, stderr)
	}
	var r pymongoResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("pymongo_client.py printed %q: %v", out, err)
	}
	return r
}

func TestPyMongoConnectsWithCredentialsAndPings(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	r := runPyMongo(t, "mongodb://alice:s3cret%20pass@"+addr+"/?authSource=admin")
	if !strings.HasPrefix(r.Version, "3.11") {
		t.Errorf("PyMongo %s, the test is meant for 3.11", r.Version)
	}
	if r.Error != "" || r.Ping != 1 {
		t.Fatalf("PyMongo: %+v", r)
	}
	if r.Msg != "isdbgrid" || r.MaxWireVersion != MinMaxWireVersion || r.ServerVersion != "4.4.0" {
		t.Errorf("PyMongo sees msg %q, maxWireVersion %d, version %q", r.Msg, r.MaxWireVersion, r.ServerVersion)
	}
	if r.FindCode != int(CodeNotRoutedYet.Code) {
		t.Errorf("PyMongo find: code %d, want %d", r.FindCode, CodeNotRoutedYet.Code)
	}
}

func TestPyMongoWrongPasswordIsAuthenticationFailed(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	r := runPyMongo(t, "mongodb://alice:wrong@"+addr+"/?authSource=admin", "2000")
	if r.ErrorCode != 18 {
		t.Fatalf("PyMongo with a wrong password: %+v, want code 18", r)
	}
}

// TestPyMongoReplicaSetURIFails keeps docs/mongo.md's quote of PyMongo's
// error honest.
func TestPyMongoReplicaSetURIFails(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	r := runPyMongo(t, "mongodb://"+addr+"/?replicaSet=rs0", "1000")
	t.Logf("PyMongo says: %s", r.Error)
	if !strings.HasPrefix(r.Error, "ServerSelectionTimeoutError") {
		t.Fatalf("PyMongo with replicaSet=: %+v, want ServerSelectionTimeoutError", r)
	}
}

// TestPyMongoCRUDThroughProxy: PyMongo 3.11's inserts, finds, updates,
// deletes and getMore batches, forwarded to a FerretDB member.
func TestPyMongoCRUDThroughProxy(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{Users: testUsers})
	r := runPyMongo(t, "mongodb://alice:s3cret%20pass@"+addr+"/?authSource=admin", "5000", "crud")
	if r.Error != "" || r.Found != "ada" || r.Modified != 1 || r.Updated != "grace" || r.Deleted != 1 || r.Batched != 1000 {
		t.Fatalf("PyMongo CRUD: %+v", r)
	}
}
