#!/usr/bin/env bash
# Makes sure the Kafka-protocol broker `tansu` is built and prints the path of its binary.
#
#   TANSU_BIN="$(scripts/ensure-tansu.sh)"
#
# The broker is built once from crates.io (3–10 minutes on 2 cores) into a cache outside the
# repository, $HOME/.cache/saga-tracker/tansu-<version>, and reused afterwards. Only the
# SQLite storage engine is compiled in (`--features libsql`): it keeps every message, which
# the tests rely on, and needs no external service. Idempotent and safe to run concurrently:
# a second caller waits for the first one's build instead of starting another.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usable() {
    [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1
}

if [[ -n "${TANSU_BIN:-}" ]]; then
    usable "$TANSU_BIN" || die "TANSU_BIN=$TANSU_BIN is not a runnable tansu binary"
    log "using tansu from TANSU_BIN ($("$TANSU_BIN" --version 2>/dev/null))"
    printf '%s\n' "$TANSU_BIN"
    exit 0
fi

if usable "$TANSU_CACHED_BIN"; then
    log "tansu $TANSU_VERSION is built ($TANSU_CACHED_BIN)"
    printf '%s\n' "$TANSU_CACHED_BIN"
    exit 0
fi

have cargo || die "cargo is required to build tansu"
mkdir -p "$(dirname "$TANSU_ROOT")"

# A build started by hand (or by an older copy of this script) holds no lock of ours: wait
# for it rather than racing it into the same root. Bounded: a cold build takes < 15 min.
wait_for_foreign_build() {
    local deadline=$((SECONDS + 30 * 60)) announced=0
    while pgrep -f "cargo install tansu --version $TANSU_VERSION .*--root $TANSU_ROOT" >/dev/null 2>&1; do
        if ((!announced)); then
            log "another 'cargo install tansu' into $TANSU_ROOT is running: waiting for it"
            announced=1
        fi
        ((SECONDS < deadline)) || die "gave up waiting for the other tansu build after 30 min"
        sleep 5
    done
}

wait_for_foreign_build

# Serialise our own builds across processes (two test runs starting at once).
exec 9>"$TANSU_ROOT.lock"
if ! flock -n 9; then
    log "another process is building tansu: waiting for its lock"
    flock -w 1800 9 || die "timed out waiting for the tansu build lock ($TANSU_ROOT.lock)"
fi

if ! usable "$TANSU_CACHED_BIN"; then
    build_log="$(dirname "$TANSU_ROOT")/tansu-$TANSU_VERSION-build.log"
    log "building tansu $TANSU_VERSION from crates.io into $TANSU_ROOT (3-10 min; log: $build_log)"
    start=$SECONDS
    if ! cargo install tansu --version "$TANSU_VERSION" --locked \
        --no-default-features --features libsql \
        --root "$TANSU_ROOT" >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "building tansu failed (full log: $build_log)"
    fi
    log "built tansu in $((SECONDS - start)) s"
fi

usable "$TANSU_CACHED_BIN" || die "tansu was built but $TANSU_CACHED_BIN does not run"
log "tansu $TANSU_VERSION is built ($TANSU_CACHED_BIN)"
printf '%s\n' "$TANSU_CACHED_BIN"
