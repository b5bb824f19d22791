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
