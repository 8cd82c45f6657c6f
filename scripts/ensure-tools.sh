#!/usr/bin/env bash
# Makes sure the command-line tools the end-to-end tests drive are installed:
#
#   socat            the TLS listener (OpenSSL) in front of tansu in tests/tests/security.rs,
#                    because tansu 0.6.0 cannot turn on its own TLS listener;
#   initdb, pg_ctl   PostgreSQL's server binaries, for the test's private TLS server with a
#                    password-only role (they come with the server ensure-postgres.sh installs);
#   script           util-linux's (Debian: bsdutils), which gives tests/tests/cli.rs a
#                    pseudo-terminal to check `--color auto` and NO_COLOR on a real terminal.
#
# Idempotent: installs from Debian's archive only what is missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
have socat || missing+=(socat)
have runuser || missing+=(util-linux)
have script || missing+=(bsdutils)
if ((${#missing[@]})); then
    have apt-get || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (apt)"
    apt_log="$(mktemp)"
    if ! apt-get install -y -q "${missing[@]}" >"$apt_log" 2>&1; then
        apt-get update -q >>"$apt_log" 2>&1
        apt-get install -y -q "${missing[@]}" >>"$apt_log" 2>&1 || {
            tail -n 20 "$apt_log" >&2
            die "apt-get install ${missing[*]} failed"
        }
    fi
    rm -f "$apt_log"
fi

ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || die "PostgreSQL's server binaries (initdb) are missing: apt-get install -y postgresql"
log "test tools present: socat $(socat -V 2>/dev/null | awk '/socat version/ {print $3; exit}'), $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
