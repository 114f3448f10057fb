# Sourced by scripts/compat, scripts/upstream and scripts/test (needs `log`,
# `die` and ROOT): the JavaScript SDKs for tests/compat/test_js_sdk.py and
# Azurite (Microsoft's Blob storage emulator, for managed HSM backups):
# Node from Debian's packages, the pinned packages (tests/js/package-lock.json)
# from npm into target/js-smoke, reinstalled when the lock file or Node
# changes. Exports KEYHAVEN_JS_DIR.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing nodejs and npm (Debian)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2 \
            || die "apt-get install nodejs npm failed"
    else
        die "node and npm are needed for the JavaScript SDK test (apt-get install nodejs npm)"
    fi
fi
JS_DIR="$ROOT/target/js-smoke"
JS_WANT=$( { cat tests/js/package-lock.json; node --version; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$JS_DIR/.stamp" 2>/dev/null || true)" != "$JS_WANT" ]; then
    log "installing the JavaScript SDKs into $JS_DIR"
    rm -rf "$JS_DIR"
    mkdir -p "$JS_DIR"
    cp tests/js/package.json tests/js/package-lock.json "$JS_DIR/"
    (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed"
    echo "$JS_WANT" > "$JS_DIR/.stamp"
fi
export KEYHAVEN_JS_DIR="$JS_DIR"
