# shellcheck shell=bash
# scripts/lib/dc_ports.sh — which listening sockets would stop the test DC from binding its
# ports. Sourced by scripts/samba-dc; tested by scripts/lib/test_dc_ports.sh.

# The addresses each test DC binds are fixed in scripts/samba-dc (`interfaces = 127.0.0.1 ::1`
# for DC1, `127.0.0.2` for DC2, with `bind interfaces only = yes`).

# dc_port_clashes ADDR... <ss-lines
# Reads `ss -Hltn[p]` lines (State Recv-Q Send-Q Local:Port Peer:Port [Process]) on stdin and
# prints those whose local address would make Linux refuse the DC's bind of ADDR on the same
# port (EADDRINUSE). The port itself is not checked: select the ports with ss's filter.
# What clashes (each case checked against the kernel with Python sockets):
#   - the same address, with or without an interface suffix (127.0.0.1%lo: samba binds to no
#     device, and a device-bound socket still clashes with an unbound one);
#   - an IPv4-mapped IPv6 address ([::ffff:127.0.0.1]) with its IPv4 address;
#   - 0.0.0.0 (and [::ffff:0.0.0.0]) with any IPv4 address;
#   - * (a dual-stack [::], as ss prints it) and [::] with anything: ss versions differ in
#     telling an IPV6_V6ONLY [::] apart, so [::] is taken to clash with IPv4 too (it clashes
#     with ::1 anyway).
# Anything else — 127.0.0.2, 10.1.2.3, [fe80::1]%eth0 — does not clash with 127.0.0.1 or ::1.
# Addresses are compared as ss prints them (lower-case, IPv6 compressed), brackets or not.
dc_port_clashes() {
    awk -v addrs="$*" '
        BEGIN {
            n = split(tolower(addrs), a, /[ \t\n]+/)
            for (i = 1; i <= n; i++) {
                if (a[i] == "") continue
                mine[a[i]] = 1
                if (a[i] !~ /:/) has4 = 1
            }
        }
        NF >= 4 {
            host = tolower($4)
            sub(/:[^:]*$/, "", host)          # the port
            sub(/%.*$/, "", host)             # an interface suffix: 127.0.0.1%lo, [fe80::1]%eth0
            gsub(/^\[|\]$/, "", host)         # [::1] -> ::1 (old ss prints no brackets)
            if (host ~ /^::ffff:[0-9.]+$/) host = substr(host, 8)
            if (host == "*" || host == "::" || (host == "0.0.0.0" && has4) || (host in mine)) print
        }'
}
