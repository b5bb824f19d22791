package mysql

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/router"
)

// sentinels are the package-level errors of this package and of router,
// by name. TestEveryErrorKindHasACode finds every `var errX =
// errors.New(...)` in the source and requires it here, so a new error kind
// cannot reach clients without a row in errorTable.
var sentinels = map[string]error{
	"router.ErrNoPrimary":        router.ErrNoPrimary,
	"router.ErrWritableConflict": router.ErrWritableConflict,
	"router.ErrNoReplica":        router.ErrNoReplica,
	"router.ErrNoLease":          router.ErrNoLease,
	"router.ErrChanging":         router.ErrChanging,
	"errBackendDown":             errBackendDown,
	"errBackendLost":             errBackendLost,
	"errPoolTimeout":             errPoolTimeout,
	"errSessionState":            errSessionState,
	"errOutcomeUnknown":          errOutcomeUnknown,
	"errTxnLost":                 errTxnLost,
	"ErrPacketTooLarge":          ErrPacketTooLarge,
	"errMalformedHandshake":      errMalformedHandshake,
	"ErrSequence":                ErrSequence,
}

// neverSent are sentinels that steer control flow and never become an ERR
// packet: there is no client left to tell, or the client was already told.
var neverSent = map[string]string{
	"errClientGone": "the client is gone",
	"errQuit":       "the client quit",
	"errHandled":    "the error was already written",
}

// declaredErrors lists package-level variables initialised with errors.New
// in the non-test files of dir (with prefix before each name).
func declaredErrors(t *testing.T, dir, prefix string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, v := range vs.Values {
					call, ok := v.(*ast.CallExpr)
					if !ok {
						continue
					}
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "New" {
						if x, ok := sel.X.(*ast.Ident); ok && x.Name == "errors" {
							out = append(out, prefix+vs.Names[i].Name)
						}
					}
				}
			}
		}
	}
	return out
}

func TestEveryErrorKindHasACode(t *testing.T) {
	declared := append(declaredErrors(t, ".", ""), declaredErrors(t, "../../router", "router.")...)
	if len(declared) < len(sentinels) {
		t.Fatalf("found only %v: is the source scan broken?", declared)
	}
	for _, name := range declared {
		if _, ok := neverSent[name]; ok {
			continue
		}
		err, ok := sentinels[name]
		if !ok {
			t.Errorf("%s is declared but not in this test's sentinels: give it a row in errorTable and list it here", name)
			continue
		}
		if lookupError(err) < 0 {
			t.Errorf("%s has no row in errorTable", name)
		}
	}
	kinds := map[string]bool{otherKind: true}
	for _, e := range errorTable {
		if kinds[e.kind] {
			t.Errorf("kind %q twice: dbrouter_errors_total would merge two errors", e.kind)
		}
		kinds[e.kind] = true
		if e.code == CodeOutcomeUnknown && strings.HasPrefix(e.state, "08") {
			t.Errorf("outcome unknown with SQLSTATE %s: drivers retry 08xxx as transient", e.state)
		}
	}
}
