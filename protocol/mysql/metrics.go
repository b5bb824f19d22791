package mysql

import "github.com/dbrouter/dbrouter/proxy"

// stmtKindOf is the kind label of dbrouter_query_duration_seconds for a
// command of class c answered as kind.
func stmtKindOf(c Class, kind respKind) proxy.StmtKind {
	switch {
	case kind != respResult && kind != respFetch:
		return proxy.StmtOther
	case c.Kind == KindRead:
		return proxy.StmtRead
	case c.Kind == KindWrite:
		return proxy.StmtWrite
	}
	return proxy.StmtOther
}
