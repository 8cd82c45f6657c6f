#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for user `postgres` without a password.
#
# Idempotent: does nothing when it already does. Otherwise starts the existing cluster, or
# installs Debian's `postgresql` package (which creates a cluster) and starts it. On a cluster
# this script had to start or install, loopback connections are switched to `trust`, the
# same set-up the dev and CI machines come with; a running server is never reconfigured.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pg_ready() {
    have pg_isready && pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3
}

can_login() {
    psql_admin -d postgres -c 'select 1' >/dev/null 2>&1
}

# The first cluster listening on our port, as "VERSION NAME", or nothing.
find_cluster() {
    have pg_lsclusters || return 0
    pg_lsclusters --no-header 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2; exit }'
}

start_cluster() {
    local version=$1 name=$2
    log "starting PostgreSQL cluster $version/$name"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
        warn "pg_ctlcluster start returned non-zero (it may already be starting)"
}

trust_loopback() {
    local version=$1 name=$2 hba
    hba="/etc/postgresql/$version/$name/pg_hba.conf"
    [[ -f "$hba" ]] || die "no pg_hba.conf at $hba"
    if grep -q '^# saga-tracker: trust loopback' "$hba"; then
        return 0
    fi
    log "allowing passwordless loopback logins in $hba (dev/CI set-up)"
    local tmp
    tmp="$(mktemp)"
    {
        echo '# saga-tracker: trust loopback (added by scripts/ensure-postgres.sh)'
        echo 'local   all   all                 trust'
        echo 'host    all   all   127.0.0.1/32  trust'
        echo 'host    all   all   ::1/128       trust'
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
}

wait_ready() {
    local deadline=$((SECONDS + 60))
    until pg_ready; do
        ((SECONDS < deadline)) || die "PostgreSQL did not become ready on $PG_HOST:$PG_PORT within 60 s"
        sleep 1
    done
}

if pg_ready && can_login; then
    log "PostgreSQL is up on $PG_HOST:$PG_PORT"
    exit 0
fi

started_here=0
cluster="$(find_cluster)"
if [[ -z "$cluster" ]]; then
    if ! have pg_ctlcluster || [[ -z "$(ls /etc/postgresql 2>/dev/null)" ]]; then
        log "PostgreSQL is not installed: installing Debian's postgresql package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
    fi
    cluster="$(find_cluster)"
    if [[ -z "$cluster" ]]; then
        version="$(ls /etc/postgresql | sort -V | tail -n1)"
        [[ -n "$version" ]] || die "postgresql installed but no version under /etc/postgresql"
        log "creating PostgreSQL cluster $version/main on port $PG_PORT"
        pg_createcluster --port "$PG_PORT" "$version" main >/dev/null
        cluster="$version main"
    fi
    started_here=1
fi

read -r version name <<<"$cluster"
if ! pg_ready; then
    start_cluster "$version" "$name"
    started_here=1
fi
wait_ready

if ! can_login; then
    if ((started_here)); then
        trust_loopback "$version" "$name"
    fi
    can_login || die "PostgreSQL is up but 'psql -h $PG_HOST -U $PG_USER' cannot log in without a password; set TEST_DATABASE_URL / TRACKER_DATABASE__URL with credentials"
fi
log "PostgreSQL is up on $PG_HOST:$PG_PORT"
