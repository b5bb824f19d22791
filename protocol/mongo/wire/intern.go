package wire

// interned holds the command names, sequence identifiers and database names
// that drivers send all the time. Turning wire bytes into a string costs an
// allocation; looking the bytes up here first (a map index with string(b)
// does not allocate) gives the common names for free, which keeps the read
// path at zero allocations. A name missing from the list is still returned
// correctly, as a copy: leaving one out costs an allocation, not a bug.
var interned = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		// CRUD and cursors.
		"find", "insert", "update", "delete", "findAndModify", "aggregate",
		"count", "distinct", "getMore", "killCursors", "bulkWrite", "explain",
		// Handshake, authentication and sessions.
		"hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo",
		"saslStart", "saslContinue", "authenticate", "logout", "endSessions",
		"startSession", "refreshSessions", "commitTransaction", "abortTransaction",
		"connectionStatus", "getParameter", "hostInfo", "whatsmyuri",
		"getLog", "serverStatus", "getCmdLineOpts", "getFreeMonitoringStatus",
		// Catalogue.
		"listCollections", "listDatabases", "listIndexes", "create", "drop",
		"dropDatabase", "createIndexes", "dropIndexes", "renameCollection",
		"collMod", "collStats", "dbStats", "validate", "killOp", "currentOp",
		"createUser", "dropUser", "updateUser", "usersInfo",
		// Document sequence identifiers.
		"documents", "updates", "deletes", "ops", "nsInfo",
		// Databases every deployment has, and the legacy command namespace.
		"admin", "config", "local", "admin.$cmd",
	} {
		m[s] = s
	}
	return m
}()

// intern returns b as a string, without allocating when b is a common name.
func intern(b []byte) string {
	if s, ok := interned[string(b)]; ok {
		return s
	}
	return string(b)
}
