# The two commands on a fresh Debian machine: `make run` and `make test`.
# Each installs what it needs (apt-get for servers and tools, Go modules
# through the module proxy).

GO        ?= go
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS  := mariadb-server mariadb-client sysbench haproxy python3-pymysql
BIN       := bin
FUZZTIME  ?= 30s

# RUNTIME_TUNING is baked into every binary the Makefile builds. When all of
# the Go runtime's Ps go idle, its sysmon thread deep-sleeps, and the next
# goroutine to enter a system call wakes it with a futex; sysmon then polls
# every 20 µs for a while. A proxy idles between statements, so that was one
# extra thread wake-up (and a burst of timer wake-ups) per statement on the
# cores the servers need: ~50 µs per statement with one client. Any
# schedtrace period keeps sysmon out of deep sleep (it polls at most every
# 10 ms instead); this one (24.8 days) is never printed in practice, at
# most one SCHED line per 24.8 days of uptime. Measured in bench/NOTES.md.
RUNTIME_TUNING := -X=runtime.godebugDefault=schedtrace=2147483647
GOBUILD   := $(GO) build -ldflags='$(RUNTIME_TUNING)'
export RUNTIME_TUNING

.PHONY: all build run test deps lint bench fuzz chaos clean

all: build

# deps installs the servers and tools the tests, the sandbox and the
# benchmarks run (only what is missing; mariadb's own service is not started).
deps:
	@missing=""; \
	command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	command -v mariadb >/dev/null 2>&1 || missing="$$missing mariadb-client"; \
	command -v sysbench >/dev/null 2>&1 || missing="$$missing sysbench"; \
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || missing="$$missing python3-pymysql"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi
	$(GO) mod download

# clients-deps installs the client programs and drivers the client matrix
# (clients/) runs, only what is missing: Debian's packages for the Python
# drivers (PyMySQL, mysqlclient, PyMongo), MariaDB Connector/J with a JDK to
# compile its program, the mariadb CLI and sysbench; Node's mysql2 and
# mongodb into clients/node from its lock file (again when the lock file is
# newer than the install).
.PHONY: clients-deps
clients-deps:
	@missing=""; \
	/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || missing="$$missing python3-pymysql"; \
	/usr/bin/python3 -c 'import MySQLdb' >/dev/null 2>&1 || missing="$$missing python3-mysqldb"; \
	/usr/bin/python3 -c 'import pymongo' >/dev/null 2>&1 || missing="$$missing python3-pymongo"; \
	[ -f /usr/share/java/mariadb-java-client.jar ] || missing="$$missing libmariadb-java"; \
	command -v javac >/dev/null 2>&1 || missing="$$missing default-jdk-headless"; \
	command -v mariadb >/dev/null 2>&1 || missing="$$missing mariadb-client"; \
	command -v sysbench >/dev/null 2>&1 || missing="$$missing sysbench"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@cd clients/node && if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		npm ci --no-audit --no-fund --loglevel=error; \
	fi

build:
	$(GOBUILD) -o $(BIN)/routerd ./cmd/routerd
	$(GOBUILD) -o $(BIN)/routerctl ./cmd/routerctl
	$(GOBUILD) -o $(BIN)/sandbox ./cmd/sandbox
	$(GOBUILD) -o $(BIN)/ferretmember ./cmd/ferretmember

run: deps build
	./$(BIN)/sandbox

# test runs every test (unit, integration on real mariadbd, fuzz seed corpora)
# with the race detector, after vet and staticcheck.
# One package at a time (-p 1): the integration packages each start real
# servers (mariadbd, replica sets of ferretmember processes, routerd
# deployments) and measure failover times; on a two-core machine two such
# packages at once starve each other's servers of CPU, and a failover then
# takes longer than the bound its test holds it to.
test: deps clients-deps lint
	$(GO) test -race -count=1 -p 1 -timeout 20m ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# fuzz runs each wire-parser fuzz target for FUZZTIME.
fuzz:
	$(GO) test ./protocol/mysql -run '^$$' -fuzz '^FuzzPacketReader$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mysql -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mysql -run '^$$' -fuzz '^FuzzHandshakeResponse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mysql -run '^$$' -fuzz '^FuzzTrackedOK$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo/wire -run '^$$' -fuzz '^FuzzReadMessage$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo/wire -run '^$$' -fuzz '^FuzzOpMsg$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo/wire -run '^$$' -fuzz '^FuzzOpQuery$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo -run '^$$' -fuzz '^FuzzReadPref$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo -run '^$$' -fuzz '^FuzzInspectReply$$' -fuzztime $(FUZZTIME)
	$(GO) test ./protocol/mongo -run '^$$' -fuzz '^FuzzCommand$$' -fuzztime $(FUZZTIME)
	$(GO) test ./raftfsm -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./topology/mariadb -run '^$$' -fuzz '^FuzzParseGTIDSet$$' -fuzztime $(FUZZTIME)
	$(GO) test ./topology/mariadb -run '^$$' -fuzz '^FuzzParsePosition$$' -fuzztime $(FUZZTIME)
	$(GO) test ./topology/mariadb -run '^$$' -fuzz '^FuzzParseReplicaStatus$$' -fuzztime $(FUZZTIME)
	$(GO) test ./topology/mongo -run '^$$' -fuzz '^FuzzParseHello$$' -fuzztime $(FUZZTIME)

# chaos measures failover (kill -9 and SIGSTOP of the primary) and switchover
# on fresh deployments with default settings (CHAOS_RUNS each) and writes
# chaos/RESULTS.md.
CHAOS_RUNS ?= 5
chaos: deps
	$(GO) run ./cmd/chaos -runs $(CHAOS_RUNS) -out chaos/RESULTS.md

bench: deps build
	./bench/run.sh

# package builds $(DIST)/dbrouter_VERSION_ARCH.deb with dpkg-deb: routerd and
# routerctl (static, with RUNTIME_TUNING), the systemd units, example configs
# and maintainer scripts from packaging/, the docs. VERSION comes from git
# describe (packaging/deb-version.sh), ARCH from dpkg. docs/operations.md,
# "Installing from the .deb".
DIST        ?= dist
DEB_VERSION ?= $(shell packaging/deb-version.sh)
DEB_ARCH    ?= $(shell dpkg --print-architecture)
DEB_COMPRESS ?= gzip
.PHONY: package
package:
	@GO='$(GO)' DIST='$(DIST)' DEB_VERSION='$(DEB_VERSION)' DEB_ARCH='$(DEB_ARCH)' DEB_COMPRESS='$(DEB_COMPRESS)' packaging/build-deb.sh

clean:
	rm -rf $(BIN)
