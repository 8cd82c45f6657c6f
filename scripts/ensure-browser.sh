#!/usr/bin/env bash
# Makes sure the real-browser UI tests (tests/tests/ui.rs driving tests/ui/*.mjs) can run, and
# prints the path of the browser binary:
#
#   CHROMIUM_BIN="$(scripts/ensure-browser.sh)"
#
#   chromium        Debian's headless-capable Chromium; Playwright drives it over CDP.
#                   `npx playwright install` would download a browser build of its own, which
#                   cannot work on a machine that reaches package registries only;
#   nginx-light     a real forwarding proxy for the test that puts an `Authorization` header in
#                   front of the UI. The tests run their own nginx with their own configuration
#                   on a free loopback port, so the package must not leave a system nginx
#                   listening on port 80: its service is kept from starting while installing;
#   playwright-core `npm ci` in tests/ui from the committed package-lock.json, skipped when
#                   tests/ui/node_modules was installed from this very lock file.
#
# Idempotent and non-interactive: installs from Debian's archive only what is missing
# (`apt-get update` once, only when something is), reinstalls node modules only when the lock
# changed. Progress goes to stderr; stdout carries only the browser path.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
UI_TEST_DIR="$REPO_ROOT/tests/ui"

missing=()
[[ -x "$CHROMIUM_BIN" ]] || missing+=(chromium)
have nginx || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
have node || missing+=(nodejs)
have npm || missing+=(npm)

if ((${#missing[@]})); then
    have apt-get || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (apt)"
    # Keep package scripts from starting services (nginx on port 80) while installing. An
    # existing policy (a container's own) already says so and is left alone.
    policy=/usr/sbin/policy-rc.d
    placed_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# placed by saga-tracker scripts/ensure-browser.sh while installing\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        placed_policy=1
        trap 'rm -f "$policy"' EXIT
    fi
    apt_log="$(mktemp)"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        apt-get update -q >>"$apt_log" 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 || {
            tail -n 20 "$apt_log" >&2
            die "apt-get install ${missing[*]} failed"
        }
    fi
    rm -f "$apt_log"
    if ((placed_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi
    # Where systemd runs, a later boot must not start the system nginx either.
    if [[ " ${missing[*]} " == *" nginx-light "* ]] && [[ -d /run/systemd/system ]]; then
        systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
fi

[[ -x "$CHROMIUM_BIN" ]] || die "no browser at $CHROMIUM_BIN after installing chromium"
"$CHROMIUM_BIN" --version >/dev/null 2>&1 || die "$CHROMIUM_BIN --version fails: the browser cannot start"

# Node modules: playwright-core only (it downloads no browser; the tests use $CHROMIUM_BIN).
[[ -f "$UI_TEST_DIR/package-lock.json" ]] || die "$UI_TEST_DIR/package-lock.json is missing"
stamp="$UI_TEST_DIR/node_modules/.installed-from-lock.sha256"
want="$(sha256sum "$UI_TEST_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$UI_TEST_DIR/node_modules/playwright-core" ]]; then
    log "tests/ui/node_modules matches package-lock.json"
else
    log "npm ci in tests/ui (playwright-core)"
    npm_log="$(mktemp)"
    (
        cd "$UI_TEST_DIR"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
    ) >"$npm_log" 2>&1 || {
        tail -n 30 "$npm_log" >&2
        die "npm ci in tests/ui failed"
    }
    rm -f "$npm_log"
    printf '%s\n' "$want" >"$stamp"
fi

log "browser tests ready: $("$CHROMIUM_BIN" --version 2>/dev/null | head -1), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), node $(node --version)"
printf '%s\n' "$CHROMIUM_BIN"
