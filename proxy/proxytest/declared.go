// Package proxytest holds what the tests of the proxy package and of the
// protocol packages share: finding the errors a package declares, so a
// test can require each to have a kind (and so a code on every protocol).
package proxytest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// DeclaredErrors lists the package-level variables of the non-test files
// of dir initialised with errors.New (plain: no kind) or proxy.NewError
// (kinded).
func DeclaredErrors(t testing.TB, dir string) (plain, kinded []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
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
					switch constructor(v) {
					case "errors.New":
						plain = append(plain, vs.Names[i].Name)
					case "proxy.NewError", "NewError":
						kinded = append(kinded, vs.Names[i].Name)
					}
				}
			}
		}
	}
	return plain, kinded
}

// constructor is the function v calls ("errors.New", "NewError"), or "".
func constructor(v ast.Expr) string {
	call, ok := v.(*ast.CallExpr)
	if !ok {
		return ""
	}
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		if x, ok := f.X.(*ast.Ident); ok {
			return x.Name + "." + f.Sel.Name
		}
	}
	return ""
}

// CheckDeclaredErrors fails t unless every package-level error of dir is
// either kinded, listed in own, and has a kind (hasKind: proxy.KindOf is
// not KindOther; passed in because the proxy package's own tests import
// this one), or plain and listed in neverSent (errors that never reach a
// client). A scan finding fewer than the lists name is itself a failure.
func CheckDeclaredErrors(t testing.TB, dir string, own map[string]error, neverSent map[string]string, hasKind func(error) bool) {
	t.Helper()
	plain, kinded := DeclaredErrors(t, dir)
	if len(kinded) < len(own) || len(plain) < len(neverSent) {
		t.Fatalf("found only %v and %v: is the source scan broken?", kinded, plain)
	}
	for _, name := range plain {
		if _, ok := neverSent[name]; !ok {
			t.Errorf("%s is declared with errors.New: an error a client may see needs a kind (proxy.NewError), or list it in neverSent", name)
		}
	}
	for _, name := range kinded {
		err, ok := own[name]
		if !ok {
			t.Errorf("%s is declared but not in this test's ownSentinels: list it there", name)
			continue
		}
		if !hasKind(err) {
			t.Errorf("%s has no kind", name)
		}
	}
}
