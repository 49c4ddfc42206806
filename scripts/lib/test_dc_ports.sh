#!/usr/bin/env bash
# Tests dc_port_clashes (scripts/lib/dc_ports.sh), the filter scripts/samba-dc start uses to
# decide whether something else holds the test DC's ports. Pure: feeds sample `ss -Hltn(p)`
# lines, needs no DC, no root, no network. Exit 0 when every case passes.
#   scripts/lib/test_dc_ports.sh
set -euo pipefail
# shellcheck source=dc_ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/dc_ports.sh"

failures=0 cases=0
# check WANT ADDRS LINE: WANT is clash or free; ADDRS the DC's addresses (space-separated).
check() {
    local want=$1 addrs=$2 line=$3 got
    cases=$((cases + 1))
    # shellcheck disable=SC2086 # ADDRS is a word list on purpose
    if [[ -n $(dc_port_clashes $addrs <<<"$line") ]]; then got=clash; else got=free; fi
    if [[ $got != "$want" ]]; then
        printf 'FAIL: DC on [%s], listener "%s": want %s, got %s\n' "$addrs" "$line" "$want" "$got" >&2
        failures=$((failures + 1))
    fi
}

DC='127.0.0.1 ::1'
# What ss 6.1 prints, one listener per line (format checked live with Python sockets).
check clash "$DC" 'LISTEN 0      10     127.0.0.1:389 0.0.0.0:* users:(("samba",pid=3549,fd=25))'
check clash "$DC" 'LISTEN 0      10         [::1]:636    [::]:* users:(("samba",pid=3549,fd=22))'
check clash "$DC" 'LISTEN 0      128      0.0.0.0:389  0.0.0.0:*'
check clash "$DC" 'LISTEN 0      128            *:88         *:*'
check clash "$DC" 'LISTEN 0      128         [::]:389     [::]:*'
check clash "$DC" 'LISTEN 0      128    [::ffff:127.0.0.1]:389 *:*'
check clash "$DC" 'LISTEN 0      128    [::ffff:0.0.0.0]:389 *:*'
check clash "$DC" 'LISTEN 0      128    127.0.0.1%lo:389 0.0.0.0:*'
check clash "$DC" 'LISTEN 0      128    0.0.0.0%eth0:636 0.0.0.0:*'
check clash "$DC" 'LISTEN 0      128    [::]%eth0:636 [::]:*'
check free  "$DC" 'LISTEN 0      10     127.0.0.2:389 0.0.0.0:* users:(("samba",pid=4711,fd=25))'
check free  "$DC" 'LISTEN 0      10     10.1.2.3:636 0.0.0.0:*'
check free  "$DC" 'LISTEN 0      10     192.0.2.2:88 0.0.0.0:*'
check free  "$DC" 'LISTEN 0      10     [fd00::2]:389 [::]:*'
check free  "$DC" 'LISTEN 0      10     [fe80::1]%eth0:389 [::]:*'
check free  "$DC" 'LISTEN 0      128    [::ffff:127.0.0.2]:389 *:*'
check free  "$DC" 'LISTEN 0      10     127.0.0.10:389 0.0.0.0:*'   # not a prefix match
check free  "$DC" 'LISTEN 0      10     [::10]:389 [::]:*'
# Old ss (no brackets around IPv6).
check clash "$DC" 'LISTEN 0      128    :::389 :::*'
check clash "$DC" 'LISTEN 0      128    ::1:389 :::*'
check clash "$DC" 'LISTEN 0      128    ::ffff:127.0.0.1:389 :::*'
check free  "$DC" 'LISTEN 0      128    ::ffff:10.1.2.3:389 :::*'
# A DC without IPv6 on lo: 0.0.0.0 still clashes; a loopback IPv6 listener does not.
check clash '127.0.0.1' 'LISTEN 0 128 0.0.0.0:389 0.0.0.0:*'
check free  '127.0.0.1' 'LISTEN 0 128 [::1]:389 [::]:*'
check clash '127.0.0.1' 'LISTEN 0 128 [::]:389 [::]:*'        # taken to clash (ss may hide dual-stack)
# A DC whose lo also carries 127.0.0.2: then it clashes.
check clash '127.0.0.1 127.0.0.2 ::1' 'LISTEN 0 10 127.0.0.2:389 0.0.0.0:*'
# Several lines: only the clashing ones come out, unchanged.
want=$'LISTEN 0 10 127.0.0.1:88 0.0.0.0:*\nLISTEN 0 10 *:636 *:*'
got=$(dc_port_clashes 127.0.0.1 ::1 <<'LINES'
LISTEN 0 10 127.0.0.2:389 0.0.0.0:*
LISTEN 0 10 127.0.0.1:88 0.0.0.0:*
LISTEN 0 10 10.1.2.3:389 0.0.0.0:*
LISTEN 0 10 *:636 *:*
LINES
)
cases=$((cases + 1))
if [[ $got != "$want" ]]; then
    printf 'FAIL: several lines: want\n%s\ngot\n%s\n' "$want" "$got" >&2
    failures=$((failures + 1))
fi
# Empty input: nothing.
cases=$((cases + 1))
[[ -z $(dc_port_clashes 127.0.0.1 ::1 </dev/null) ]] || { echo 'FAIL: empty input printed something' >&2; failures=$((failures + 1)); }

if ((failures > 0)); then
    echo "test_dc_ports: $failures of $cases cases failed" >&2
    exit 1
fi
echo "test_dc_ports: $cases cases passed"
