# Sourced by scripts/compat and scripts/upstream: makes the *.localhost names
# the suites use resolve to loopback. Needs `log` and `die` defined.
# --------------------------------------------------------------------------
# 3. Name resolution for *.localhost.
#
# The suite talks to the server by name, as an application would:
# dev.vault.localhost (the vault), login.localhost (token endpoint),
# management.localhost, graph.localhost, and other *.vault.localhost names
# (e.g. nosuch.vault.localhost for the unknown-vault test). RFC 6761 says
# *.localhost is loopback, but Debian's glibc ("hosts: files dns") does not
# resolve it. Steps, each only if the previous did not suffice:
#   a) libnss-myhostname (resolves localhost and *.localhost, any depth, to
#      loopback): apt-get install it and put `myhostname` right after `files`
#      in the hosts: line of /etc/nsswitch.conf (before `dns`, so no DNS query
#      is made first);
#   b) append a marked block to /etc/hosts with the fixed names the suite uses
#      (idempotent: the block is replaced, never duplicated).
# Finally every name must resolve to an IPv4 loopback address, or we fail.
# Needs root for a) and b); both are no-ops when names already resolve.
# --------------------------------------------------------------------------
NAMES="localhost dev.vault.localhost login.localhost management.localhost graph.localhost \
nosuch.vault.localhost other.vault.localhost kvlab.vault.localhost"

resolves_all() {
    local n
    for n in $NAMES; do
        getent ahostsv4 "$n" 2>/dev/null | awk '{print $1}' | grep -q '^127\.' || return 1
    done
}

ensure_myhostname_in_nsswitch() {
    [ -f /etc/nsswitch.conf ] || return 0
    if grep -qE '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
        # present: make sure it comes before dns
        if grep -qE '^hosts:.*\bdns\b.*\bmyhostname\b' /etc/nsswitch.conf; then
            sed -i -E '/^hosts:/{s/[[:space:]]+myhostname\b//; s/\bfiles\b/files myhostname/}' /etc/nsswitch.conf
        fi
    elif grep -qE '^hosts:.*\bfiles\b' /etc/nsswitch.conf; then
        sed -i -E '/^hosts:/s/\bfiles\b/files myhostname/' /etc/nsswitch.conf
    elif grep -qE '^hosts:' /etc/nsswitch.conf; then
        sed -i -E 's/^hosts:[[:space:]]*/hosts: myhostname /' /etc/nsswitch.conf
    else
        echo 'hosts: files myhostname dns' >> /etc/nsswitch.conf
    fi
}

HOSTS_BEGIN='# BEGIN keyhaven-compat (scripts/compat)'
HOSTS_END='# END keyhaven-compat'
ensure_etc_hosts_block() {
    local tmp
    tmp=$(mktemp)
    # drop any previous block, then append a fresh one
    awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0==b{skip=1;next} $0==e{skip=0;next} !skip' /etc/hosts > "$tmp"
    {
        echo "$HOSTS_BEGIN"
        echo "127.0.0.1 $NAMES"
        echo "$HOSTS_END"
    } >> "$tmp"
    # /etc/hosts may be a bind mount: rewrite in place rather than replacing the inode
    cat "$tmp" > /etc/hosts
    rm -f "$tmp"
}

if ! resolves_all; then
    log "*.localhost does not resolve to loopback; setting up name resolution"
    if [ "$(id -u)" -ne 0 ]; then
        die "*.localhost names do not resolve and we are not root; add to /etc/hosts: 127.0.0.1 $NAMES"
    fi
    if ! dpkg -s libnss-myhostname >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            log "installing libnss-myhostname"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnss-myhostname) >&2 \
                || log "apt-get install libnss-myhostname failed; will fall back to /etc/hosts"
        fi
    fi
    if dpkg -s libnss-myhostname >/dev/null 2>&1; then
        ensure_myhostname_in_nsswitch
    fi
    if ! resolves_all; then
        log "myhostname did not suffice; adding a keyhaven-compat block to /etc/hosts"
        ensure_etc_hosts_block
    fi
fi
for n in $NAMES; do
    addr=$(getent ahostsv4 "$n" 2>/dev/null | awk 'NR==1{print $1}')
    case "$addr" in
        127.*) ;;
        *) die "name resolution check failed: '$n' resolves to '${addr:-nothing}', expected 127.x (see comments in scripts/compat)" ;;
    esac
done
log "name resolution OK ($(echo $NAMES | wc -w) names -> loopback)"
