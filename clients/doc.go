// Package clients owns the client matrix: real MySQL/MariaDB clients, each at
// its default settings, running a small application workload through a
// proxy of a whole deployment (real mariadbd members, three arbiters, the
// control plane; chaos/deploy). Its tests prove the promise that an
// unchanged application works through the proxy as it did against one
// server.
//
// The clients are go-sql-driver/mysql and go-mysql's client (in Go, in the
// tests), PyMySQL and mysqlclient (python/workload.py), MariaDB Connector/J
// (java/Workload.java, compiled at test time), Node's mysql2
// (node/workload.js, installed into node/ by `make clients-deps`), the
// mariadb command-line client and sysbench (driven by the tests). A client
// that is missing fails the test with how to install it; `make test`
// installs them all.
//
// Every client runs in three modes and reports on standard output, one line
// each: "ok CHECK", "fail CHECK: why", "ready", "tick" (promote: one per
// write) or "info ..." (logged). Connection and table come from the
// environment (DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD, DBR_DATABASE,
// DBR_TABLE, DBR_STOP_FILE).
//
//   - workload: connect; write a row and read it back on the same
//     connection (write_read); a transaction rolled back leaves no row
//     (rollback); a prepared statement with parameters, as the client
//     prepares (prepared); a 20 MiB row written and read back with the same
//     SHA-256 (big_row); a duplicate key gives error 1062 (dup_key).
//   - restart: connect, say "ready", wait for a line on standard input (the
//     proxy has been restarted meanwhile), then connect again, retrying for
//     up to 30 s as an application would, and write and read (reconnect).
//   - promote: write a row and read it back in a loop until the stop file
//     exists, while the test runs a planned switchover (promote): no error.
//
// The Mongo matrix (mongo_matrix_test.go) is its counterpart for the
// MongoDB protocol: the Go driver (in the test), PyMongo
// (python/mongo_workload.py) and Node's mongodb driver
// (node/mongo_workload.js), each at its default settings, authenticating at
// a routerd's Mongo proxy in front of FerretDB members and reporting in the
// same protocol (checks connect, crud, cursor, insert_many, errors).
package clients
