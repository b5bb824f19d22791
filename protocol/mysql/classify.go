package mysql

// The classifier decides, from the SQL text alone, whether a statement is
// provably read-only and what session state it touches. It is a lexer, not a
// parser: it walks tokens once, allocates nothing, and whenever it is unsure it
// answers "write" (primary) or "pin", because misrouting a write to a replica
// is a correctness bug while misrouting a read to the primary is only a cost.

// Hint is a routing hint found in a comment.
type Hint uint8

// Hints: /* dbrouter:primary */ and /* dbrouter:replica */ anywhere in the
// statement.
const (
	HintNone Hint = iota
	HintPrimary
	HintReplica
)

// Pin is a set of reasons a session must keep its backend connection.
type Pin uint16

// Pin reasons, set by statements (the transaction ones come from server
// status flags instead).
const (
	PinTxn          Pin = 1 << iota // SERVER_STATUS_IN_TRANS
	PinNoAutocommit                 // autocommit=0
	PinLockTables                   // LOCK TABLES, FLUSH TABLES WITH READ LOCK
	PinUserLock                     // GET_LOCK and friends
	PinTempTable                    // CREATE TEMPORARY TABLE
	PinUserVar                      // user variables assigned
	PinSQLPrepare                   // PREPARE ... FROM (server-side SQL prepared statements)
	PinNextTxn                      // SET TRANSACTION (applies to the next transaction of that connection)
	PinLongData                     // COM_STMT_SEND_LONG_DATA until execute
	PinCursor                       // COM_STMT_EXECUTE opened a cursor
	PinHandler                      // HANDLER ... OPEN
	PinUnknown                      // session state the proxy cannot replay
)

// numPins is the number of pin reasons.
const numPins = 12

var pinNames = [numPins]string{"transaction", "autocommit=0", "lock tables", "user lock", "temporary table", "user variable", "sql prepare", "set transaction", "long data", "cursor", "handler", "unknown state"}

// pinLabels are the reason label values of dbrouter_pinned_sessions.
var pinLabels = [numPins]string{"transaction", "autocommit_off", "lock_tables", "user_lock", "temporary_table", "user_variable", "sql_prepare", "set_transaction", "long_data", "cursor", "handler", "unknown_state"}

// String lists the reasons.
func (p Pin) String() string {
	s := ""
	for i, n := range pinNames {
		if p&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	return s
}

// Kind is what a statement does to routing state.
type Kind uint8

// Kinds.
const (
	KindWrite        Kind = iota // anything not provably read-only
	KindRead                     // provably read-only: may go to a replica
	KindSet                      // session SET: tracked and replayed
	KindUse                      // USE db: tracked and replayed
	KindUnlockTables             // UNLOCK TABLES: clears PinLockTables
)

// Class is the classifier's verdict on one COM_QUERY.
type Class struct {
	Kind Kind
	Hint Hint
	// Pin: reasons this statement makes the session keep its connection.
	Pin Pin
	// ReadsSession: the statement reads per-connection state (LAST_INSERT_ID,
	// FOUND_ROWS, user variables, warnings) and must run where the previous
	// statement ran.
	ReadsSession bool
	// CalcFoundRows: SQL_CALC_FOUND_ROWS, a later FOUND_ROWS() needs this
	// connection.
	CalcFoundRows bool
	// Multi: more than one statement.
	Multi bool
	// KeepsTxn: the statement cannot commit an open transaction (a read,
	// DML, SAVEPOINT, ROLLBACK): when its connection is lost inside one,
	// the server rolled the whole transaction back, so the outcome is
	// known. COMMIT, statements that commit implicitly (DDL, BEGIN, LOCK
	// TABLES, SET autocommit=1, ...), CALL and anything unknown may have
	// committed it.
	KeepsTxn bool
}

type lexer struct {
	s    []byte
	pos  int
	hint Hint
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
func isIdent(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80
}

// token kinds
const (
	tEOF = iota
	tWord
	tOther  // punctuation
	tString // quoted literal or quoted identifier
	tUserVar
	tSysVar
	tSemicolon
)

// next returns the next token's kind and bounds, skipping whitespace and
// comments (recording hints found in them).
func (l *lexer) next() (kind, start, end int) {
	s := l.s
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case isSpace(c):
			l.pos++
		case c == '#':
			l.skipLine()
		case c == '-' && l.pos+2 < len(s) && s[l.pos+1] == '-' && isSpace(s[l.pos+2]):
			l.skipLine()
		case c == '-' && l.pos+2 == len(s) && s[l.pos+1] == '-':
			l.pos = len(s)
		case c == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*':
			// Executable comments (/*! ... */, /*M! ... */) are code to the
			// server: lex their contents rather than skip them.
			if l.pos+2 < len(s) && (s[l.pos+2] == '!' || (s[l.pos+2] == 'M' && l.pos+3 < len(s) && s[l.pos+3] == '!')) {
				l.pos += 3
				if s[l.pos-1] == 'M' {
					l.pos++
				}
				for l.pos < len(s) && s[l.pos] >= '0' && s[l.pos] <= '9' {
					l.pos++
				}
				continue
			}
			l.skipComment()
		case c == '*' && l.pos+1 < len(s) && s[l.pos+1] == '/':
			l.pos += 2 // end of an executable comment
		default:
			return l.token()
		}
	}
	return tEOF, l.pos, l.pos
}

func (l *lexer) skipLine() {
	for l.pos < len(l.s) && l.s[l.pos] != '\n' {
		l.pos++
	}
}

func (l *lexer) skipComment() {
	start := l.pos + 2
	l.pos = start
	for l.pos+1 < len(l.s) && !(l.s[l.pos] == '*' && l.s[l.pos+1] == '/') {
		l.pos++
	}
	body := l.s[start:l.pos]
	if l.pos+1 < len(l.s) {
		l.pos += 2
	} else {
		l.pos = len(l.s)
	}
	l.scanHint(body)
}

func (l *lexer) scanHint(body []byte) {
	const prefix = "dbrouter:"
	for i := 0; i+len(prefix) <= len(body); i++ {
		if !eqFold(body[i:i+len(prefix)], prefix) {
			continue
		}
		rest := body[i+len(prefix):]
		switch {
		case len(rest) >= 7 && eqFold(rest[:7], "primary"):
			l.hint = HintPrimary
		case len(rest) >= 7 && eqFold(rest[:7], "replica"):
			if l.hint != HintPrimary { // primary wins when both appear
				l.hint = HintReplica
			}
		}
	}
}

func (l *lexer) token() (kind, start, end int) {
	s := l.s
	start = l.pos
	c := s[l.pos]
	switch {
	case c == '\'' || c == '"' || c == '`':
		l.pos++
		for l.pos < len(s) {
			if s[l.pos] == '\\' && c != '`' {
				l.pos += 2
				continue
			}
			if s[l.pos] == c {
				if l.pos+1 < len(s) && s[l.pos+1] == c { // doubled quote
					l.pos += 2
					continue
				}
				break
			}
			l.pos++
		}
		if l.pos < len(s) {
			l.pos++
		} else {
			l.pos = len(s)
		}
		return tString, start, l.pos
	case c == '@':
		l.pos++
		kind := tUserVar
		if l.pos < len(s) && s[l.pos] == '@' {
			kind = tSysVar
			l.pos++
		}
		if l.pos < len(s) && (s[l.pos] == '\'' || s[l.pos] == '"' || s[l.pos] == '`') {
			_, _, e := l.token()
			return kind, start, e
		}
		for l.pos < len(s) && (isIdent(s[l.pos]) || s[l.pos] == '.') {
			l.pos++
		}
		return kind, start, l.pos
	case c == ';':
		l.pos++
		return tSemicolon, start, l.pos
	case isIdent(c):
		for l.pos < len(s) && isIdent(s[l.pos]) {
			l.pos++
		}
		return tWord, start, l.pos
	default:
		l.pos++
		return tOther, start, l.pos
	}
}

// eqFold compares b to an upper- or lower-case ASCII keyword.
func eqFold(b []byte, kw string) bool {
	if len(b) != len(kw) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		k := kw[i]
		if k >= 'a' && k <= 'z' {
			k -= 'a' - 'A'
		}
		if c != k {
			return false
		}
	}
	return true
}

// Classify classifies the SQL of one COM_QUERY.
func Classify(sql []byte) Class {
	l := lexer{s: sql}
	var out Class
	first := true
	for {
		c, more := l.statement()
		if first {
			out = c
			first = false
		} else {
			out.Multi = true
			out = merge(out, c)
		}
		if !more {
			break
		}
	}
	out.Hint = l.hint
	return out
}

// merge combines the classes of a multi-statement: it is a read only if every
// part is, and session-state statements inside it are not replayable.
func merge(a, b Class) Class {
	out := Class{Kind: KindWrite, Pin: a.Pin | b.Pin, ReadsSession: a.ReadsSession || b.ReadsSession, CalcFoundRows: a.CalcFoundRows || b.CalcFoundRows, Multi: true,
		KeepsTxn: a.KeepsTxn && b.KeepsTxn}
	if a.Kind == KindRead && b.Kind == KindRead {
		out.Kind = KindRead
	}
	for _, k := range [...]Kind{a.Kind, b.Kind} {
		if k == KindSet || k == KindUse || k == KindUnlockTables {
			out.Pin |= PinUnknown
		}
	}
	return out
}

// statement classifies up to the next top-level ';'. more reports whether a
// non-empty statement may follow.
func (l *lexer) statement() (c Class, more bool) {
	kind, s, e := l.next()
	for kind == tOther && l.s[s] == '(' { // (SELECT ...) UNION (SELECT ...)
		kind, s, e = l.next()
	}
	switch kind {
	case tEOF:
		return Class{Kind: KindRead, KeepsTxn: true}, false // empty: harmless anywhere (the server answers with an error)
	case tSemicolon:
		return Class{Kind: KindRead, KeepsTxn: true}, l.hasMore()
	}
	if kind != tWord {
		return l.rest(Class{Kind: KindWrite})
	}
	w := l.s[s:e]
	c, more = l.byKeyword(w)
	c.KeepsTxn = keepsTxn(w)
	return c, more
}

// keepsTxn reports whether a statement starting with w cannot commit an
// open transaction (see Class.KeepsTxn). A short list on purpose: what is
// not on it counts as a possible commit.
func keepsTxn(w []byte) bool {
	for _, kw := range [...]string{"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES",
		"SHOW", "DESC", "DESCRIBE", "EXPLAIN", "HELP", "DO", "SAVEPOINT", "ROLLBACK", "RELEASE", "HANDLER"} {
		if eqFold(w, kw) {
			return true
		}
	}
	return false
}

// byKeyword classifies a statement by its first word w.
func (l *lexer) byKeyword(w []byte) (Class, bool) {
	switch {
	case eqFold(w, "SELECT"), eqFold(w, "WITH"), eqFold(w, "VALUES"):
		return l.readScan()
	case eqFold(w, "SHOW"):
		return l.show()
	case eqFold(w, "DESC"), eqFold(w, "DESCRIBE"), eqFold(w, "HELP"):
		return l.rest(Class{Kind: KindRead})
	case eqFold(w, "EXPLAIN"):
		return l.explain()
	case eqFold(w, "SET"):
		return l.set()
	case eqFold(w, "USE"):
		return l.rest(Class{Kind: KindUse})
	case eqFold(w, "LOCK"):
		return l.rest(Class{Kind: KindWrite, Pin: PinLockTables})
	case eqFold(w, "UNLOCK"):
		return l.rest(Class{Kind: KindUnlockTables})
	case eqFold(w, "FLUSH"):
		c := Class{Kind: KindWrite}
		if l.contains("LOCK") {
			c.Pin |= PinLockTables
		}
		return l.rest(c)
	case eqFold(w, "CREATE"):
		c := Class{Kind: KindWrite}
		k2, s2, e2 := l.next()
		if k2 == tWord && eqFold(l.s[s2:e2], "OR") { // CREATE OR REPLACE TEMPORARY TABLE
			l.next()
			k2, s2, e2 = l.next()
		}
		if k2 == tWord && eqFold(l.s[s2:e2], "TEMPORARY") {
			c.Pin |= PinTempTable
		}
		return l.rest(c)
	case eqFold(w, "PREPARE"), eqFold(w, "EXECUTE"), eqFold(w, "DEALLOCATE"):
		return l.rest(Class{Kind: KindWrite, Pin: PinSQLPrepare})
	case eqFold(w, "HANDLER"):
		return l.rest(Class{Kind: KindWrite, Pin: PinHandler})
	case eqFold(w, "DO"):
		return l.writeScan()
	default:
		// INSERT, UPDATE, DELETE, REPLACE, BEGIN, COMMIT, XA, CALL, DDL, and
		// anything unknown: a write. Scan on for session effects.
		return l.writeScan()
	}
}

// hasMore reports whether anything but whitespace/comments/semicolons follows.
func (l *lexer) hasMore() bool {
	save := l.pos
	for {
		k, _, _ := l.next()
		if k == tEOF {
			return false
		}
		if k != tSemicolon {
			l.pos = save
			return true
		}
		save = l.pos
	}
}

// rest skips to the end of the statement, still noting session-state reads
// and lock functions.
func (l *lexer) rest(c Class) (Class, bool) {
	return l.scan(c, false)
}

func (l *lexer) readScan() (Class, bool) { return l.scan(Class{Kind: KindRead}, true) }

func (l *lexer) writeScan() (Class, bool) { return l.scan(Class{Kind: KindWrite}, false) }

// scan walks the rest of one statement. For a read candidate it demotes the
// statement to a write on anything that is not provably read-only.
func (l *lexer) scan(c Class, read bool) (Class, bool) {
	prevFor := false
	prevLock := false
	prevWord := -1 // start of previous word, for "NEXT VALUE FOR"
	for {
		kind, s, e := l.next()
		switch kind {
		case tEOF:
			return c, false
		case tSemicolon:
			return c, l.hasMore()
		case tUserVar:
			c.ReadsSession = true
			if l.peekAssign() {
				c.Pin |= PinUserVar
				c.Kind = demote(c.Kind)
			}
		case tSysVar:
			w := l.s[s:e]
			if eqFoldSuffix(w, "warning_count") || eqFoldSuffix(w, "error_count") || eqFoldSuffix(w, "identity") || eqFoldSuffix(w, "last_insert_id") {
				c.ReadsSession = true
			}
		case tWord:
			w := l.s[s:e]
			isCall := l.peekByte() == '('
			switch {
			case read && prevFor && (eqFold(w, "UPDATE") || eqFold(w, "SHARE")):
				c.Kind = KindWrite // SELECT ... FOR UPDATE / FOR SHARE
			case read && prevLock && eqFold(w, "IN"):
				c.Kind = KindWrite // LOCK IN SHARE MODE
			case read && eqFold(w, "INTO"):
				c.Kind = KindWrite // INTO OUTFILE/DUMPFILE/@var
				if l.peekToken() == tUserVar {
					// Assigned from the query's result: the value
					// exists on this connection only.
					c.Pin |= PinUserVar
				}
			case read && !isCall && (eqFold(w, "INSERT") || eqFold(w, "UPDATE") || eqFold(w, "DELETE") || eqFold(w, "REPLACE")):
				c.Kind = KindWrite // WITH ... UPDATE, or anything odd
			case eqFold(w, "SQL_CALC_FOUND_ROWS"):
				c.CalcFoundRows = true
			case eqFold(w, "FOR") && prevWord >= 0 && eqFold(l.s[prevWord:prevWord+min(5, len(l.s)-prevWord)], "VALUE"):
				c.Kind = demote(c.Kind) // NEXT/PREVIOUS VALUE FOR seq
				c.ReadsSession = true
			case isCall:
				switch {
				case eqFold(w, "GET_LOCK"), eqFold(w, "RELEASE_LOCK"), eqFold(w, "RELEASE_ALL_LOCKS"), eqFold(w, "IS_USED_LOCK"), eqFold(w, "IS_FREE_LOCK"):
					c.Pin |= PinUserLock
					c.Kind = demote(c.Kind)
				case eqFold(w, "LAST_INSERT_ID"), eqFold(w, "FOUND_ROWS"), eqFold(w, "ROW_COUNT"):
					c.ReadsSession = true
				case eqFold(w, "NEXTVAL"), eqFold(w, "SETVAL"), eqFold(w, "LASTVAL"):
					c.Kind = demote(c.Kind)
					c.ReadsSession = true
				}
			}
			prevFor = eqFold(w, "FOR")
			prevLock = eqFold(w, "LOCK")
			prevWord = s
			continue
		}
		prevFor, prevLock = false, false
	}
}

func demote(k Kind) Kind {
	if k == KindRead {
		return KindWrite
	}
	return k
}

// eqFoldSuffix: @@session.warning_count, @@warning_count.
func eqFoldSuffix(b []byte, kw string) bool {
	return len(b) >= len(kw) && eqFold(b[len(b)-len(kw):], kw) && (len(b) == len(kw) || b[len(b)-len(kw)-1] == '@' || b[len(b)-len(kw)-1] == '.')
}

func (l *lexer) peekByte() byte {
	for i := l.pos; i < len(l.s); i++ {
		if !isSpace(l.s[i]) {
			return l.s[i]
		}
	}
	return 0
}

// peekToken returns the kind of the next token without consuming it.
func (l *lexer) peekToken() int {
	save, hint := l.pos, l.hint
	k, _, _ := l.next()
	l.pos, l.hint = save, hint
	return k
}

func (l *lexer) peekAssign() bool {
	for i := l.pos; i < len(l.s); i++ {
		if isSpace(l.s[i]) {
			continue
		}
		return l.s[i] == ':' && i+1 < len(l.s) && l.s[i+1] == '='
	}
	return false
}

// contains reports whether the keyword appears before the end of the
// statement, without consuming.
func (l *lexer) contains(kw string) bool {
	save, hint := l.pos, l.hint
	defer func() { l.pos, l.hint = save, hint }()
	for {
		k, s, e := l.next()
		if k == tEOF || k == tSemicolon {
			return false
		}
		if k == tWord && eqFold(l.s[s:e], kw) {
			return true
		}
	}
}

// show: SHOW is read-only, but SHOW WARNINGS/ERRORS read the previous
// statement's diagnostics on its connection.
func (l *lexer) show() (Class, bool) {
	c := Class{Kind: KindRead}
	k, s, e := l.next()
	if k == tWord {
		w := l.s[s:e]
		if eqFold(w, "WARNINGS") || eqFold(w, "ERRORS") || eqFold(w, "COUNT") || eqFold(w, "PROFILE") || eqFold(w, "PROFILES") {
			c.ReadsSession = true
		}
	}
	return l.rest(c)
}

// explain: EXPLAIN/ANALYZE of a statement does not run it, except ANALYZE
// (MariaDB's ANALYZE SELECT runs the select; ANALYZE TABLE writes stats) and
// EXPLAIN ANALYZE: those follow the inner statement's class.
func (l *lexer) explain() (Class, bool) {
	if l.contains("ANALYZE") {
		return l.writeScan()
	}
	return l.rest(Class{Kind: KindRead})
}

// set classifies SET statements.
func (l *lexer) set() (Class, bool) {
	save := l.pos
	k, s, e := l.next()
	if k == tWord {
		w := l.s[s:e]
		switch {
		case eqFold(w, "GLOBAL"), eqFold(w, "PASSWORD"), eqFold(w, "DEFAULT"):
			return l.writeScan()
		case eqFold(w, "TRANSACTION"):
			return l.rest(Class{Kind: KindWrite, Pin: PinNextTxn})
		case eqFold(w, "STATEMENT"): // SET STATEMENT ... FOR stmt: one-shot, classify as write
			return l.writeScan()
		}
	}
	if k == tSysVar && (eqFoldPrefix(l.s[s:e], "@@global.")) {
		return l.writeScan()
	}
	l.pos = save
	// Session assignments are replayable, and so are user variables
	// assigned a literal; a user variable assigned anything else (a query's
	// result, a function, another variable) or read makes it pinned state,
	// and anything touching global scope is a write.
	c := Class{Kind: KindSet}
	for {
		k, s, e := l.next()
		switch k {
		case tEOF:
			return c, false
		case tSemicolon:
			return c, l.hasMore()
		case tUserVar:
			if !l.literalAssignment() {
				c.Pin |= PinUserVar
				c.ReadsSession = true
			}
		case tSysVar:
			if eqFoldPrefix(l.s[s:e], "@@global.") {
				c.Kind = KindWrite
			}
		case tWord:
			w := l.s[s:e]
			if eqFold(w, "GLOBAL") {
				c.Kind = KindWrite
			}
			if l.peekByte() == '(' && (eqFold(w, "GET_LOCK") || eqFold(w, "RELEASE_LOCK")) {
				c.Pin |= PinUserLock
			}
			if l.peekByte() == '(' && (eqFold(w, "LAST_INSERT_ID") || eqFold(w, "FOUND_ROWS") || eqFold(w, "ROW_COUNT")) {
				c.ReadsSession = true
			}
		}
	}
}

// literalAssignment reports whether the user variable just lexed is
// assigned a literal: numbers, strings, NULL, TRUE, FALSE, with signs,
// character set introducers (_utf8mb4'x', N'x') and hexadecimal or bit
// forms. Run again on another connection such an assignment gives the
// variable the same value, so the proxy can replay it as it replays SET.
// It consumes the assignment when it is one, and nothing otherwise.
func (l *lexer) literalAssignment() bool {
	save, hint := l.pos, l.hint
	fail := func() bool {
		l.pos, l.hint = save, hint
		return false
	}
	k, s, _ := l.next()
	if k == tOther && l.s[s] == ':' {
		k, s, _ = l.next()
	}
	if k != tOther || l.s[s] != '=' {
		return fail()
	}
	values := 0
	for {
		before := l.pos
		k, s, e := l.next()
		switch {
		case k == tEOF || k == tSemicolon || k == tOther && l.s[s] == ',':
			l.pos = before // the caller goes on from there
			if values == 0 {
				return fail()
			}
			return true
		case k == tString && l.s[s] != '`':
			values++
		case k == tWord && isLiteralWord(l.s[s:e]):
			values++
		case k == tWord && l.pos < len(l.s) && l.s[l.pos] == '\'' && isIntroducer(l.s[s:e]):
			// the string that follows is the value
		case k == tOther && (l.s[s] == '-' || l.s[s] == '+' || l.s[s] == '.'):
		default:
			return fail()
		}
	}
}

// isLiteralWord: a number (1, 1e5, 0x1F, 0b101) or NULL, TRUE, FALSE.
func isLiteralWord(w []byte) bool {
	return w[0] >= '0' && w[0] <= '9' || eqFold(w, "NULL") || eqFold(w, "TRUE") || eqFold(w, "FALSE")
}

// isIntroducer: a character set introducer (_utf8mb4) or the N, X and B
// prefixes of national, hexadecimal and bit strings.
func isIntroducer(w []byte) bool {
	return w[0] == '_' || eqFold(w, "N") || eqFold(w, "X") || eqFold(w, "B")
}

func eqFoldPrefix(b []byte, kw string) bool {
	return len(b) >= len(kw) && eqFold(b[:len(kw)], kw)
}

// UseTarget extracts the database name of a USE statement.
func UseTarget(sql []byte) (string, bool) {
	l := lexer{s: sql}
	k, s, e := l.next()
	if k != tWord || !eqFold(sql[s:e], "USE") {
		return "", false
	}
	k, s, e = l.next()
	switch k {
	case tWord:
		return string(sql[s:e]), true
	case tString:
		if e-s >= 2 && sql[s] == '`' {
			return unquoteIdent(sql[s+1 : e-1]), true
		}
	}
	return "", false
}

func unquoteIdent(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		out = append(out, b[i])
		if b[i] == '`' && i+1 < len(b) && b[i+1] == '`' {
			i++
		}
	}
	return string(out)
}

// SetKey returns a key naming what a single-assignment SET changes (so a later
// SET of the same variable replaces the earlier one in the replay list) or ""
// when the statement is more complex.
func SetKey(sql []byte) string {
	l := lexer{s: sql}
	if k, s, e := l.next(); k != tWord || !eqFold(sql[s:e], "SET") {
		return ""
	}
	k, s, e := l.next()
	if k == tWord && (eqFold(sql[s:e], "SESSION") || eqFold(sql[s:e], "LOCAL")) {
		k, s, e = l.next()
	}
	if k != tWord && k != tSysVar && k != tUserVar {
		return ""
	}
	name := sql[s:e]
	if k == tWord && (eqFold(name, "NAMES") || eqFold(name, "CHARACTER") || eqFold(name, "CHARSET")) {
		return "names"
	}
	// Exactly one assignment: no top-level comma.
	depth := 0
	for {
		k, s2, _ := l.next()
		if k == tEOF || k == tSemicolon {
			break
		}
		if k == tOther {
			switch sql[s2] {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth == 0 {
					return ""
				}
			}
		}
	}
	key := make([]byte, 0, len(name))
	for _, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		key = append(key, c)
	}
	for _, p := range []string{"@@session.", "@@local.", "@@"} {
		if len(key) >= len(p) && string(key[:len(p)]) == p {
			key = key[len(p):]
			break
		}
	}
	return string(key)
}
