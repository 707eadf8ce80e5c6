#!/bin/sh
# pg-start.sh starts a throwaway PostgreSQL server for the sql sink's tests
# and prints the DSN to put in PIPELINED_TEST_PG_DSN:
#
#	export PIPELINED_TEST_PG_DSN=$(plugins/sql/testdata/pg-start.sh)
#	go test -race ./plugins/sql/
#
# Installs Debian's postgresql package first when it is missing and this runs
# as root. Idempotent: a cluster already in PGDATA is reused, a running server is left
# running. `pg-start.sh restart` restarts the running server (fast shutdown),
# for the test that restarts the database mid-stream:
#
#	export PIPELINED_TEST_PG_RESTART="testdata/pg-start.sh restart"
#
# Runs as root (switches to the postgres user) or as postgres.
# Trust authentication on 127.0.0.1 only: for tests, never for production.
# Override with PGDATA, PGPORT, PGBIN.
set -eu

PGDATA=${PGDATA:-/tmp/pgdata}
PGPORT=${PGPORT:-55432}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
LOG=${PGLOG:-/tmp/pg.log}

if { [ -z "$PGBIN" ] || [ ! -x "$PGBIN/pg_ctl" ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "pg-start.sh: installing PostgreSQL from Debian's packages" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
	PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
	echo "pg-start.sh: no PostgreSQL found under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)" >&2
	exit 1
fi

as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		su postgres -s /bin/sh -c "$1"
	else
		sh -c "$1"
	fi
}

if [ ! -f "$PGDATA/PG_VERSION" ]; then
	mkdir -p "$PGDATA"
	if [ "$(id -u)" = 0 ]; then
		chown postgres:postgres "$PGDATA"
		touch "$LOG" && chown postgres:postgres "$LOG"
	fi
	chmod 700 "$PGDATA"
	as_postgres "'$PGBIN/initdb' -D '$PGDATA' --auth=trust -U postgres" >&2
fi

if [ "${1:-}" = restart ]; then
	as_postgres "'$PGBIN/pg_ctl' -D '$PGDATA' -o '-k /tmp -c listen_addresses=127.0.0.1 -p $PGPORT' -l '$LOG' -m fast -w restart" >&2
	exit 0
fi

if ! as_postgres "'$PGBIN/pg_ctl' -D '$PGDATA' status" >/dev/null 2>&1; then
	as_postgres "'$PGBIN/pg_ctl' -D '$PGDATA' -o '-k /tmp -c listen_addresses=127.0.0.1 -p $PGPORT' -l '$LOG' -w start" >&2
fi

echo "postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
