#!/usr/bin/env python3
"""The helper of `scripts/bench`: remedy's end-to-end figures, each side by side with a baseline
in the same run, against the Samba AD DC of scripts/samba-dc (eval "$(scripts/samba-dc env)").

    bench.py scale      --remedy BIN [--remedy-sha256 HEX] --out DIR [--users N] [--rounds R] [--keep]
    bench.py latency    --remedy BIN [--remedy-sha256 HEX] --out DIR [--commits N] [--keep] [--seed S]
    bench.py recontain  --remedy BIN [--remedy-sha256 HEX] --out DIR --graph-sim BIN [--users N] [--samples S]
                        [--baseline-samples S] [--entra-samples S] [--idle-seconds T] [--idle-small M]
                        [--delta-interval D] [--latency D] [--seed S] [--keep]
    bench.py samba-tool --remedy BIN [--remedy-sha256 HEX] --out DIR [--users N] [--keep]
    bench.py ha         --remedy BIN [--remedy-sha256 HEX] --out DIR [--users N] [--kills K] [--rounds R] [--keep]
                        (also needs the etcd cluster of scripts/ha: eval "$(scripts/ha env)")
    bench.py cargo      --out DIR --name ad|entra|store_memory --file OUTPUT.md    (records a cargo bench's output)
    bench.py report     --out DIR                                      (rewrites DIR/results.md)
    bench.py dcwatch                                                   (run by /usr/bin/python3, see DcWatch)

Every scenario works in an OU of its own under $REMEDY_TEST_TESTS_OU (created with one ldapadd,
deleted at the end, pass or fail) and a temporary work directory (the daemon's logs are copied to
DIR/<scenario>/). Each merges its figures into DIR/results.json, prints its markdown table and
rewrites DIR/results.md. BIN is the binary the scenario runs (scripts/bench passes its pinned
copy); its sha256 is recorded with the figure and, given --remedy-sha256, checked before the
scenario starts and again when its figure is recorded. A benchmark never fails on timing: it fails
(exit 1) when remedy did not converge, exited, or a step broke.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from remedy_lab import (  # noqa: E402
    CLIENT_ID, TENANT, UF_ACCOUNTDISABLE, Daemon, Failure, Ou, api, by_label, free_port, http, ldap, metrics,
    request_reconcile, say, statuses, write_config,
)

# What remedy's AD provider asks for (remedy::ad::ATTRIBUTES, daemon/src/ad/entry.rs): the baseline
# ldapsearch asks for the same.
AD_ATTRIBUTES = ["objectGUID", "objectSid", "sAMAccountName", "userPrincipalName", "userAccountControl",
                 "msDS-User-Account-Control-Computed", "pwdLastSet", "memberOf", "adminCount", "whenChanged",
                 "uSNChanged"]
# A resync that never fires during a run (1 January, 00:00:00 UTC): every pass measured is asked for.
NO_RESYNC = "0 0 0 1 1 *"


# ---------------------------------------------------------------------------------------------
# the DC, polled from a persistent connection


class DcWatch:
    """A persistent, authenticated LDAP connection to the DC (Samba's own Python bindings, run by
    Debian's /usr/bin/python3: no new dependency) that polls until a change shows, so that the time
    a change lands is known to a few milliseconds, not to the 60-80 ms an ldapsearch process costs
    (its bind, mostly). Times are CLOCK_MONOTONIC, the same clock as time.monotonic() here."""

    def __init__(self):
        self.process = subprocess.Popen(["/usr/bin/python3", os.path.abspath(__file__), "dcwatch"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise Failure(f"the DC watcher did not start: {line!r}")

    def ask(self, *words):
        self.process.stdin.write(" ".join(words) + "\n")
        answer = self.process.stdout.readline().split()
        if not answer or answer[0] != "ok":
            raise Failure(f"DC watcher: {' '.join(words)[:200]}: {' '.join(answer) or 'no answer'}")
        return float(answer[1]), int(answer[2])

    def disabled(self, dn, timeout):
        """Waits until the account shows UF_ACCOUNTDISABLE; (monotonic time seen, polls)."""
        return self.ask("uac", str(timeout), dn)

    def count(self, base, filter_, n, timeout):
        """Waits until a one-level search finds at least n entries; (monotonic time seen, polls)."""
        return self.ask("count", str(timeout), str(n), base, filter_)

    def reenable(self, dn, timeout):
        """Re-enables the account as the administrator (userAccountControl 512, one LDAP modify on
        this connection), then polls until it shows UF_ACCOUNTDISABLE again: {"t0": just before
        the modify was sent, "returned": the modify answered, "seen": disabled again, "polls"}, or
        None when it did not within `timeout` s (the account is then left enabled)."""
        self.process.stdin.write(f"reenable {timeout} {dn}\n")
        answer = self.process.stdout.readline().split()
        if answer and answer[0] == "ok":
            return {"t0": float(answer[1]), "returned": float(answer[2]), "seen": float(answer[3]),
                    "polls": int(answer[4])}
        if answer and answer[0] == "timeout":
            return None
        if answer and answer[0] == "lost":
            return {"lost": " ".join(answer[1:])}
        raise Failure(f"DC watcher: reenable {dn}: {' '.join(answer) or 'no answer'}")

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(5)


def dcwatch_main():
    """The other end of DcWatch: commands on stdin, one answer line each."""
    import ldb  # noqa: PLC0415 (Samba's bindings: only under Debian's python3)
    from samba.credentials import Credentials  # noqa: PLC0415
    from samba.param import LoadParm  # noqa: PLC0415
    from samba.samdb import SamDB  # noqa: PLC0415

    lp = LoadParm()
    lp.load(os.path.join(os.environ["REMEDY_TEST_DC_DIR"], "etc", "smb.conf"))
    creds = Credentials()
    creds.guess(lp)
    creds.set_username(os.environ["REMEDY_TEST_ADMIN_BIND"])
    with open(os.environ["REMEDY_TEST_ADMIN_PASSWORD_FILE"]) as f:
        creds.set_password(f.read().strip())
    def connect(wait=0):
        """A new connection; for `wait` s, retried every second (the DC is restarted by others)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return SamDB(url=os.environ["REMEDY_TEST_LDAP_URL"], credentials=creds, lp=lp)
            except ldb.LdbError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    db = connect()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.rstrip("\n").split(" ", 3)
        deadline = time.monotonic() + float(words[1])
        polls = 0
        if words[0] == "reenable":
            # A connection the DC dropped (restarted by someone else) is made again; a sample it
            # interrupted after the modify is answered "lost" (its timing means nothing).
            dn = " ".join(words[2:])
            modified = False
            try:
                try:
                    db.search(base=dn, scope=ldb.SCOPE_BASE, attrs=["userAccountControl"])
                except ldb.LdbError:
                    db = connect(wait=120)
                message = ldb.Message()
                message.dn = ldb.Dn(db, dn)
                message["userAccountControl"] = ldb.MessageElement("512", ldb.FLAG_MOD_REPLACE, "userAccountControl")
                t0 = time.monotonic()
                db.modify(message)
                modified = True
                returned = time.monotonic()
                deadline = returned + float(words[1])
                while True:
                    polls += 1
                    res = db.search(base=dn, scope=ldb.SCOPE_BASE, attrs=["userAccountControl"])
                    now = time.monotonic()
                    if int(str(res[0]["userAccountControl"][0])) & UF_ACCOUNTDISABLE:
                        print(f"ok {t0:.6f} {returned:.6f} {now:.6f} {polls}", flush=True)
                        break
                    if now > deadline:
                        print(f"timeout {polls}", flush=True)
                        break
                    time.sleep(0.004)
            except ldb.LdbError as error:
                db = connect(wait=120)
                print(f"lost {'after' if modified else 'before'}-modify {str(error).replace(' ', '_')[:200]}", flush=True)
            continue
        while True:
            polls += 1
            if words[0] == "uac":
                res = db.search(base=words[2], scope=ldb.SCOPE_BASE, attrs=["userAccountControl"])
                done = bool(int(str(res[0]["userAccountControl"][0])) & UF_ACCOUNTDISABLE)
                pause = 0.004
            else:  # count N BASE FILTER
                n, rest = int(words[2]), words[3]
                base, filter_ = rest.split(" ", 1)
                res = db.search(base=base, scope=ldb.SCOPE_ONELEVEL, expression=filter_, attrs=["sAMAccountName"])
                done = len(res) >= n
                pause = 0.02
            now = time.monotonic()
            if done:
                print(f"ok {now:.6f} {polls}", flush=True)
                break
            if now > deadline:
                print(f"timeout {polls}", flush=True)
                break
            time.sleep(pause)


# ---------------------------------------------------------------------------------------------
# what a scenario measures of remedy serve, and its setup


LDAP_COUNTER = "remedy_ldap_operations_total"


def cpu_seconds(pid):
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dc_pid():
    return int(os.environ.get("REMEDY_TEST_DC_PID") or 0)


def passes_counted(values):
    return sum(by_label(values, "remedy_reconciles_total", "outcome").values())


def metrics_after_pass(before, timeout=10):
    """/metrics once the controller has counted the pass after `before` (it updates its metrics,
    the provider counters among them, just after logging the pass)."""
    deadline = time.monotonic() + timeout
    while True:
        after = metrics()
        if passes_counted(after) > passes_counted(before) or time.monotonic() > deadline:
            return after
        time.sleep(0.01)


def ldap_counters(before, after):
    """What remedy_ldap_operations_total{operation=...} (and any other remedy_ldap_* series) grew by;
    None when the daemon does not export them."""
    names = sorted(s for s in after if s.startswith("remedy_ldap_"))
    if not names:
        return None
    out = {}
    for series in names:
        match = re.match(r'remedy_ldap_operations_total\{operation="([^"]+)"\}$', series)
        key = match.group(1) if match else series.replace("remedy_ldap_", "").replace("_total", "")
        out[key] = int(after[series] - before.get(series, 0))
    return out


def not_ready(remedy):
    out = []
    for s in statuses(remedy).values():
        ready = next((c for c in s.get("conditions", []) if c["type"] == "Ready"), {})
        if ready.get("status") != "True":
            out.append(f"{s['name']}: Ready={ready.get('status')}/{ready.get('reason')}")
    return out


def manifest(name, sam, reason):
    return (f"apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n"
            f"  reason: \"{reason}\"\n  target:\n    samAccountName: {sam}\n  activeDirectory:\n    disabled: true\n")


def git(tree, *args):
    result = subprocess.run(["git", "-C", tree, *args], text=True, capture_output=True)
    if result.returncode != 0:
        raise Failure(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Scenario:
    """A work directory, a private OU, a git checkout remedy watches, remedy.yaml and a token; the
    daemon's logs are copied to OUT/<name>/ and everything else removed at the end."""

    def __init__(self, name, args, debounce=None, resync=NO_RESYNC):
        self.name, self.args = name, args
        self.work = tempfile.mkdtemp(prefix=f"remedy-bench-{name}.")
        self.ou = Ou.private(f"bench-{name}")
        self.watched = os.path.join(self.work, "watched")
        self.daemon = Daemon(self.work, args.remedy)
        self.debounce, self.resync = debounce, resync
        self.watch = None
        self.cleanups = []  # called at the end, pass or fail (graph-sim's stop)

    def __enter__(self):
        for key, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_AUTHOR_EMAIL", "bench@remedy.test"),
                           ("GIT_COMMITTER_NAME", "bench"), ("GIT_COMMITTER_EMAIL", "bench@remedy.test")):
            os.environ[key] = value
        os.makedirs(self.watched)
        git(self.watched, "init", "-q", "-b", "main")
        with open(os.path.join(self.watched, "README.md"), "w") as f:
            f.write("remediation manifests (scripts/bench)\n")
        git(self.watched, "add", "README.md")
        git(self.watched, "commit", "-q", "-m", "empty manifest repository")
        write_config(self.work, self.watched, self.ou.dn, "bench-operator", debounce=self.debounce,
                     resync=self.resync, max_changes=1000000)
        return self

    def commit(self, files, message):
        """Writes files {relative path: text} into the watched checkout and commits them there."""
        for path, text in files.items():
            with open(os.path.join(self.watched, path), "w") as f:
                f.write(text)
        git(self.watched, "add", "--", *files) if len(files) < 1000 else git(self.watched, "add", "-A")
        git(self.watched, "commit", "-q", "-m", message)

    def __exit__(self, kind, value, traceback):
        self.daemon.stop_quietly()
        if self.watch:
            self.watch.close()
        for cleanup in self.cleanups:
            cleanup()
        artifacts = os.path.join(self.args.out, self.name)
        shutil.rmtree(artifacts, ignore_errors=True)
        os.makedirs(artifacts)
        # small: a second daemon's work directory (recontain); ha-*: the HA side's three (ha)
        for sub in ("", "small", *HA_INSTANCES):
            directory = os.path.join(self.work, sub)
            if not os.path.isdir(directory):
                continue
            for entry in sorted(os.listdir(directory)):
                if entry.endswith(".log") or entry in ("remedy.yaml", "samples.json"):
                    shutil.copy(os.path.join(directory, entry), os.path.join(artifacts, f"{sub}-{entry}" if sub else entry))
        try:
            self.ou.delete()
        except Exception as error:  # noqa: BLE001 (cleanup goes on)
            print(f"warning: deleting {self.ou.dn}: {error}", file=sys.stderr)
        if self.args.keep:
            say(f"work directory kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return False


# ---------------------------------------------------------------------------------------------
# scale: 10,000 manifests: converge, peak RSS, converged resync vs one paged ldapsearch, restart


def paged_ldapsearch(ou):
    """One paged search of the OU's users, as the action account over LDAPS, the attributes remedy
    asks for: (seconds, entries, pages)."""
    t0 = time.monotonic()
    out = ldap("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-E", "pr=500/noprompt", "-b", ou,
               "(&(objectCategory=person)(objectClass=user))", *AD_ATTRIBUTES, who="action").stdout
    seconds = time.monotonic() - t0
    entries = sum(1 for line in out.splitlines() if line.startswith("dn: "))
    return seconds, entries, max(1, math.ceil(entries / 500))


def cmd_scale(args):
    n = args.users
    result = {"users": n}
    with Scenario("scale", args) as sc:
        sams = [f"bs{sc.ou.suffix}-{i:05d}" for i in range(n)]
        result["ldapaddSeconds"] = round(sc.ou.create(sams), 2)
        t0 = time.monotonic()
        for i, sam in enumerate(sams):
            with open(os.path.join(sc.watched, f"bench-{sam}.yaml"), "w") as f:
                f.write(manifest(f"bench-{sam}", sam, f"BENCH-{i}: scale benchmark"))
        git(sc.watched, "add", "-A")
        git(sc.watched, "commit", "-q", "-m", f"{n} manifests")
        say(f"{n} manifests (disable in AD) written and committed in {time.monotonic() - t0:.1f} s")

        d = sc.daemon
        started = d.start()
        ready = d.wait_http("/readyz", 120)
        say(f"remedy serve pid {d.process.pid}: /readyz 200 after {ready - started:.2f} s (empty store, {n} manifests)")
        # The first pass sends every disable; wait for the DC to show them all, and for every status.
        deadline = time.monotonic() + max(300, n / 5)
        sent = 0
        while True:
            d.check_alive()
            sent = sum(p.get("sent", 0) for p in d.passes())
            if sent >= n:
                break
            if time.monotonic() > deadline:
                raise Failure(f"remedy sent {sent} of {n} disables within the time allowed")
            time.sleep(0.2)
        applied_at = time.monotonic()
        first = d.passes()[0]
        result["initialApply"] = {"seconds": round(applied_at - started, 2),
                                  "passes": len(d.passes()), "firstPassMs": first.get("duration_ms"),
                                  "sent": sent, "failed": sum(p.get("failed", 0) for p in d.passes())}
        say(f"the first pass sent {first.get('sent')} disables in {first.get('duration_ms', 0) / 1000:.1f} s; "
            f"{sent} sent in all, {result['initialApply']['failed']} failed, {applied_at - started:.1f} s after start")
        dc = sc.ou.disabled()
        left = [s for s in sams if not dc.get(s.lower())]
        if left:
            raise Failure(f"{len(left)} of {n} accounts not disabled on the DC after remedy's passes, e.g. {left[:5]}")
        waiting = not_ready(args.remedy)
        while waiting and time.monotonic() < deadline:
            time.sleep(1)
            waiting = not_ready(args.remedy)
        if waiting:
            raise Failure(f"{len(waiting)} manifests not Ready, e.g. {waiting[:5]}")
        result["afterInitialApply"] = {k: round(v, 1) for k, v in d.memory().items()}
        say(f"converged: the DC shows all {n} disabled, every manifest Ready; "
            f"VmHWM {result['afterInitialApply']['VmHWM']:.1f} MiB, VmRSS {result['afterInitialApply']['VmRSS']:.1f} MiB")

        # Converged resyncs (asked for) and the paged ldapsearch, alternately.
        rounds = []
        for r in range(args.rounds):
            order = ("remedy", "ldapsearch") if r % 2 == 0 else ("ldapsearch", "remedy")
            row = {}
            for side in order:
                samba_cpu = cpu_seconds(dc_pid())
                if side == "ldapsearch":
                    seconds, entries, pages = paged_ldapsearch(sc.ou.dn)
                    if entries != n:
                        raise Failure(f"the baseline ldapsearch found {entries} users, not {n}")
                    row["ldapsearch"] = {"seconds": round(seconds, 3), "entries": entries, "pages": pages,
                                         "sambaCpuSeconds": round(cpu_seconds(dc_pid()) - samba_cpu, 2)}
                else:
                    count = len(d.passes())
                    remedy_cpu = cpu_seconds(d.process.pid)
                    before = metrics()
                    t0 = time.monotonic()
                    request_reconcile(accept=(202,))
                    seen, p = d.wait_pass(count + 1, 300)
                    after = metrics_after_pass(before)
                    if p.get("sent", 0) or p.get("failed", 0):
                        raise Failure(f"a converged resync sent {p.get('sent')} actions ({p.get('failed')} failed): {p}")
                    row["remedy"] = {"seconds": round(seen - t0, 3), "passMs": p.get("duration_ms"),
                                     "ldap": ldap_counters(before, after),
                                     "remedyCpuSeconds": round(cpu_seconds(d.process.pid) - remedy_cpu, 2),
                                     "sambaCpuSeconds": round(cpu_seconds(dc_pid()) - samba_cpu, 2)}
            rounds.append(row)
            say(f"round {r + 1}: remedy resync {row['remedy']['seconds']:.2f} s (pass {row['remedy']['passMs']} ms, LDAP "
                f"{row['remedy']['ldap'] if row['remedy']['ldap'] is not None else 'counters not exported'}; CPU: remedy "
                f"{row['remedy']['remedyCpuSeconds']:.2f} s, samba {row['remedy']['sambaCpuSeconds']:.2f} s), "
                f"ldapsearch {row['ldapsearch']['seconds']:.2f} s ({row['ldapsearch']['pages']} pages; samba CPU "
                f"{row['ldapsearch']['sambaCpuSeconds']:.2f} s)")
        result["resyncRounds"] = rounds
        best_remedy = min(rounds, key=lambda r: r["remedy"]["seconds"])["remedy"]
        best_search = min(r["ldapsearch"]["seconds"] for r in rounds)
        best_search_row = min(rounds, key=lambda r: r["ldapsearch"]["seconds"])["ldapsearch"]
        result["resync"] = {"remedySeconds": best_remedy["seconds"], "remedyPassMs": best_remedy["passMs"],
                            "remedyCpuSeconds": best_remedy["remedyCpuSeconds"],
                            "sambaCpuSeconds": best_remedy["sambaCpuSeconds"],
                            "ldapsearchSambaCpuSeconds": best_search_row["sambaCpuSeconds"],
                            "ldap": best_remedy["ldap"], "ldapsearchSeconds": best_search,
                            "ldapsearchPages": rounds[0]["ldapsearch"]["pages"],
                            "ratio": round(best_remedy["seconds"] / best_search, 2)}
        result["afterResync"] = {k: round(v, 1) for k, v in d.memory().items()}
        result["stopSeconds"] = round(d.stop(), 2)
        say(f"stopped by SIGTERM in {result['stopSeconds']:.2f} s (exit 0)")

        # A restart on the same store: start to ready, start to the first pass's end, and memory.
        started = d.start()
        ready = d.wait_http("/readyz", 120)
        done, p = d.wait_pass(1, 300)
        if p.get("sent", 0) or p.get("failed", 0):
            raise Failure(f"the first pass after a restart on a converged store sent {p.get('sent')} actions: {p}")
        result["restart"] = {"readySeconds": round(ready - started, 3), "firstPassSeconds": round(done - started, 3),
                             "firstPassMs": p.get("duration_ms"),
                             "memory": {k: round(v, 1) for k, v in d.memory().items()}}
        say(f"restart on the same store: /readyz 200 after {ready - started:.2f} s, first pass (converged) done after "
            f"{done - started:.2f} s; VmHWM {result['restart']['memory']['VmHWM']:.1f} MiB")
        d.stop()
    record("scale", result, args)


def table_scale(r):
    n = r["users"]
    rs = r["resync"]
    ldap = rs.get("ldap")
    if ldap is None:
        requests = (f"not measured: `/metrics` has no `{LDAP_COUNTER}` yet (expected about "
                    f"{math.ceil(n / 200)} searches: OR filters of 200 identities)")
    else:
        requests = ", ".join(f"{k} {v}" for k, v in sorted(ldap.items()))
    mem_first = r["afterInitialApply"]["VmHWM"]
    mem_resync = r["afterResync"]["VmHWM"]
    mem_restart = r["restart"]["memory"]["VmHWM"]
    rows = [
        "| figure | remedy | baseline | ratio | aim |",
        "|---|---:|---:|---:|---|",
        f"| converged resync of {n:,} managed identities, wall (best of {len(r['resyncRounds'])}; POST /v1/reconcile to the "
        f"pass logged) vs one paged `ldapsearch -E pr=500` of the same users | {rs['remedySeconds']:.2f} s "
        f"(pass {rs['remedyPassMs'] / 1000:.2f} s) | {rs['ldapsearchSeconds']:.2f} s | {rs['ratio']:.2f} | ≤ 1.2: "
        f"{verdict(rs['ratio'] <= 1.2)} |",
    ]
    if "remedyCpuSeconds" in rs:
        rows.append(f"| CPU time during that resync: remedy serve; the DC (samba) | {rs['remedyCpuSeconds']:.2f} s; "
                    f"{rs['sambaCpuSeconds']:.2f} s | –; {rs['ldapsearchSambaCpuSeconds']:.2f} s | | |")
    rows += [
        f"| LDAP requests of that resync | {requests} | {rs['ldapsearchPages']} result pages (search requests) + 1 bind | | "
        f"O(identities / page size) |",
        f"| peak RSS (VmHWM) of `remedy serve` holding {n:,} manifests after a full reconcile (restart on the store, "
        f"first pass done) | {mem_restart:.1f} MiB | | | < 100 MiB: {verdict(mem_restart < 100)} |",
        f"| peak RSS, the first process: after applying all {n:,} disables / after {len(r['resyncRounds'])} resyncs | "
        f"{mem_first:.1f} / {mem_resync:.1f} MiB | | | < 100 MiB: {verdict(max(mem_first, mem_resync) < 100)} |",
        f"| start to ready (`/readyz` 200: manifests loaded, store open), restart on the store | "
        f"{r['restart']['readySeconds']:.2f} s | | | < 2 s: {verdict(r['restart']['readySeconds'] < 2)} |",
        f"| start to the first pass done (converged: nothing sent), restart on the store | "
        f"{r['restart']['firstPassSeconds']:.2f} s | | | (< 2 s: {verdict(r['restart']['firstPassSeconds'] < 2)}) |",
        f"| first start, empty store: {n:,} disables sent and verified | {r['initialApply']['seconds']:.1f} s "
        f"(first pass {r['initialApply']['firstPassMs'] / 1000:.1f} s) | | | |",
    ]
    return rows


# ---------------------------------------------------------------------------------------------
# latency: single-manifest commits in the watched checkout to the DC showing the change


def percentile(values, p):
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values):
    return {"n": len(values), "p50": round(percentile(values, 50), 4), "p90": round(percentile(values, 90), 4),
            "p99": round(percentile(values, 99), 4), "max": round(max(values), 4), "min": round(min(values), 4)}


def cmd_latency(args):
    n = args.commits
    rng = random.Random(args.seed if args.seed is not None else random.randrange(1 << 32))
    with Scenario("latency", args) as sc:
        remedy_users = [f"bl{sc.ou.suffix}-r{i:04d}" for i in range(n)]
        direct_users = [f"bl{sc.ou.suffix}-d{i:04d}" for i in range(n)]
        sc.ou.create(remedy_users + direct_users)
        d = sc.daemon
        started = d.start()
        ready = d.wait_http("/readyz", 60)
        say(f"remedy serve pid {d.process.pid} watching a git checkout, default debounce (500ms); ready after "
            f"{ready - started:.2f} s")
        sc.watch = DcWatch()
        samples = []
        for i in range(n):
            sam = remedy_users[i]
            passes = len(d.passes())
            t0 = time.monotonic()
            sc.commit({f"bench-{sam}.yaml": manifest(f"bench-{sam}", sam, f"BENCH-{i}: latency benchmark")},
                      f"disable {sam}")
            committed = time.monotonic()
            seen, polls = sc.watch.disabled(sc.ou.user_dn(sam), 30)
            # The pass that did it ends (status and history written) before the next commit.
            d.wait_pass(passes + 1, 30)
            # The baseline: the same change by ldapmodify, as the action account over LDAPS.
            other = direct_users[i]
            t1 = time.monotonic()
            ldap("ldapmodify", who="action", stdin=(f"dn: {sc.ou.user_dn(other)}\nchangetype: modify\n"
                                                    f"replace: userAccountControl\nuserAccountControl: 514\n-\n"))
            returned = time.monotonic()
            seen_direct, _ = sc.watch.disabled(sc.ou.user_dn(other), 30)
            samples.append({"user": sam, "commitSeconds": round(committed - t0, 4), "remedy": round(seen - t0, 4),
                            "remedyFromCommitReturn": round(seen - committed, 4), "polls": polls,
                            "ldapmodify": round(seen_direct - t1, 4), "ldapmodifyReturned": round(returned - t1, 4)})
            if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
                say(f"{i + 1}/{n}: last {samples[-1]['remedy'] * 1000:.0f} ms (commit {samples[-1]['commitSeconds'] * 1000:.0f} ms),"
                    f" ldapmodify {samples[-1]['ldapmodify'] * 1000:.0f} ms")
            time.sleep(rng.uniform(0.1, 0.5))
        with open(os.path.join(sc.work, "samples.json"), "w") as f:
            json.dump(samples, f, indent=1)
        waiting = not_ready(args.remedy)
        if waiting:
            raise Failure(f"{len(waiting)} manifests not Ready after the run, e.g. {waiting[:5]}")
        dc = sc.ou.disabled()
        touched = [u for u in remedy_users + direct_users if not dc.get(u.lower())]
        if touched:
            raise Failure(f"{len(touched)} accounts not disabled at the end, e.g. {touched[:5]}")
        d.stop()
    result = {"commits": n, "debounce": "500ms, the default",
              "remedy": summary([s["remedy"] for s in samples]),
              "remedyFromCommitReturn": summary([s["remedyFromCommitReturn"] for s in samples]),
              "commit": summary([s["commitSeconds"] for s in samples]),
              "ldapmodify": summary([s["ldapmodify"] for s in samples])}
    record("latency", result, args)


def table_latency(r):
    def row(label, s, aim=""):
        return (f"| {label} | {s['n']} | {s['p50'] * 1000:.0f} ms | {s['p90'] * 1000:.0f} ms | {s['p99'] * 1000:.0f} ms | "
                f"{s['max'] * 1000:.0f} ms | {aim} |")
    p99 = r["remedy"]["p99"]
    return [
        "| path | changes | p50 | p90 | p99 | max | aim |",
        "|---|---:|---:|---:|---:|---:|---|",
        row(f"remedy: one manifest written, `git add`, `git commit` in the watched checkout (debounce {r['debounce']})"
            " → the DC shows userAccountControl 0x2", r["remedy"], f"p99 < 1 s: {verdict(p99 < 1)}"),
        row("remedy, counted from `git commit` returning", r["remedyFromCommitReturn"]),
        row("baseline: `ldapmodify` of the same change (action account, LDAPS) → the DC shows it", r["ldapmodify"]),
        "",
        f"Ratio p50 remedy / ldapmodify: {r['remedy']['p50'] / r['ldapmodify']['p50']:.1f}× "
        f"(the write and add-commit themselves: p50 {r['commit']['p50'] * 1000:.0f} ms).",
    ]


# ---------------------------------------------------------------------------------------------
# recontain: an out-of-band re-enable to the account disabled again (AD, Entra ID), and idle cost


RESYNC_EVERY_10S = "*/10 * * * * *"  # the baseline: a full resync every 10 s (docs/configuration.md)
# What each configuration turns on. Written only where it says so: a binary that rejects a key says
# the figure is not supported by it.
FAST_WATCH = {"notification": True, "pollInterval": "1s"}
USN_WATCH = {"notification": False, "pollInterval": "1s"}
NO_WATCH = {"notification": False, "pollInterval": "0s"}
# The config keys issue 15 adds, for telling a rejected configuration from another start failure.
NEW_KEYS = ("watch", "notification", "pollInterval", "deltaInterval", "contest", "unknown field")
GRAPH_SECRET = "bench-secret-not-a-real-one"


def entra_user_id(sam):
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{sam}.remedy.test"))


class GraphSim:
    """graph-sim on a free loopback port, seeded with one cloud-only, enabled user per
    sAMAccountName (UPN <sam>@remedy.test, the AD users' UPN), adding `latency` to every Graph
    request. Re-enables out of band with the app's token (PATCH /v1.0/users/{id}, as an admin's
    script would) and reads state through /_sim (no latency, not logged)."""

    def __init__(self, binary, work, sams, latency):
        if not binary or not os.access(binary, os.X_OK):
            raise Failure(f"no graph-sim binary at {binary!r}: cargo build --release --locked -p remedy-graph-sim")
        lines = [f"tenantId: {TENANT}", f"clientId: {CLIENT_ID}", f"clientSecret: {GRAPH_SECRET}",
                 "tokenLifetime: 1h", "confirmCompromisedPerSecond: 1", "pageSize: 100", "users:"]
        for sam in sams:
            lines += [f"  - id: {entra_user_id(sam)}", f"    userPrincipalName: {sam}@remedy.test"]
        seed = os.path.join(work, "graph-seed.yaml")
        with open(seed, "w") as f:
            f.write("\n".join(lines) + "\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(work, "graph-sim.log")
        with open(self.log_path, "w") as out:
            self.process = subprocess.Popen([binary, "--seed", seed, "--listen", f"127.0.0.1:{port}",
                                             "--latency", latency], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with open(self.log_path) as f:
                if "listening on" in f.read():
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path) as f:
                    raise Failure(f"graph-sim did not start: {f.read()[-500:]}")
            time.sleep(0.05)
        self.token = None

    def write_secret(self, work):
        path = os.path.join(work, "graph.secret")
        with open(path, "w") as f:
            f.write(GRAPH_SECRET)
        os.chmod(path, 0o600)

    def state(self):
        status, body = http("GET", f"{self.url}/_sim/state", timeout=30)
        if status != 200:
            raise Failure(f"graph-sim GET /_sim/state: {status}")
        return {u["id"]: u for u in body}

    def requests(self):
        """graph-sim's request log since the last clear_log: (HTTP requests, $batch sub-requests)."""
        status, body = http("GET", f"{self.url}/_sim/log", timeout=30)
        if status != 200:
            raise Failure(f"graph-sim GET /_sim/log: {status}")
        return sum(1 for e in body if not e.get("inBatch")), sum(1 for e in body if e.get("inBatch"))

    def clear_log(self):
        http("DELETE", f"{self.url}/_sim/log")

    def call(self, method, path, body=None):
        if self.token is None:
            status, answer = http("POST", f"{self.url}/{TENANT}/oauth2/v2.0/token", form={
                "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": GRAPH_SECRET,
                "scope": "00000003-0000-0000-c000-000000000000/.default"})
            if status != 200:
                raise Failure(f"graph-sim token: {status} {answer}")
            self.token = answer["access_token"]
        return http(method, f"{self.url}/v1.0{path}", body=body, headers={"Authorization": f"Bearer {self.token}"})

    def enabled(self, uid):
        """accountEnabled of one user, by GET /v1.0/users/{id} (pays graph-sim's latency)."""
        status, body = self.call("GET", f"/users/{uid}?$select=id,accountEnabled")
        if status != 200:
            raise Failure(f"graph-sim GET /users/{uid}: {status} {body}")
        return body["accountEnabled"]

    # How the out-of-band re-enable is made: graph-sim's own `POST /_sim/users/{id}` (a change
    # made in the portal: no latency, not in the request log), or, on a graph-sim without it,
    # `PATCH /v1.0/users/{id}` with the app's token. None until the first re-enable finds out.
    reenabled_by = None
    BY_SIM, BY_PATCH = "POST /_sim/users/{id}", "PATCH /v1.0/users/{id} (app token)"

    def enable_out_of_band(self, uid):
        if self.reenabled_by in (None, self.BY_SIM):
            status, body = http("POST", f"{self.url}/_sim/users/{uid}", body={"accountEnabled": True})
            if status == 204:
                self.reenabled_by = self.BY_SIM
                return
            # An unknown route answers 404 with no body; the endpoint's own 404 says which user.
            if self.reenabled_by is not None or status not in (404, 405) or body:
                raise Failure(f"graph-sim POST /_sim/users/{uid} accountEnabled=true: {status} {body}")
            self.reenabled_by = self.BY_PATCH
        status, body = self.call("PATCH", f"/users/{uid}", {"accountEnabled": True})
        if status not in (200, 204):
            raise Failure(f"graph-sim PATCH /users/{uid} accountEnabled=true: {status} {body}")

    def reenable(self, uid, timeout, pause=0.005):
        """Re-enables out of band (enable_out_of_band), then polls until remedy has set it false
        again: {"t0": just before the request was sent, "returned", "seen", "polls"}, or None after
        `timeout` s. Polled by GET /v1.0/users/{id}: each poll pays graph-sim's latency, so "seen" is
        late by up to one round trip (the latency plus `pause`)."""
        t0 = time.monotonic()
        self.enable_out_of_band(uid)
        returned = time.monotonic()
        polls = 0
        while True:
            polls += 1
            asked = time.monotonic()
            enabled = self.enabled(uid)
            now = time.monotonic()
            if not enabled:
                return {"t0": t0, "returned": returned, "seen": now, "asked": asked, "polls": polls}
            if now - returned > timeout:
                return None
            time.sleep(pause)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def metric_sum(values, name):
    """The sum of a counter over its labels; None when /metrics has no series of it."""
    found = [v for series, v in values.items() if series == name or series.startswith(name + "{")]
    return sum(found) if found else None


def recontainment_counts():
    """remedy_recontainment_seconds_count by source, {} when the binary has no such histogram. A
    second after the last sample: the DC shows the correction before remedy's read-back of it
    returns and the histogram counts it."""
    time.sleep(1)
    return {k: int(v) for k, v in by_label(metrics(), "remedy_recontainment_seconds_count", "source").items()}


class Served:
    """remedy serve on one work directory, configured for one phase of the scenario."""

    def __init__(self, sc, work, watched, graph, remedy):
        self.sc, self.work, self.watched, self.graph = sc, work, watched, graph
        self.daemon = Daemon(work, remedy)
        self.refused = None  # the configuration key the last refusal named
        graph.write_secret(work)

    def start(self, label, resync=NO_RESYNC, watch=None, delta=None, required=()):
        """Writes remedy.yaml (the options given) and starts remedy serve; waits for /readyz and its
        first pass. Returns None when it runs (self.written: what the file said), or why this
        binary does not support the phase: it refused the configuration. A key the binary does not
        know (`unknown field`) is dropped and the start tried again — a binary without the watcher
        has nothing to turn off — unless it is in `required` (the phase means nothing without it).
        Any other refusal names the phase unsupported as well."""
        self.daemon.stop_quietly()
        keys = {"watch": watch, "deltaInterval": delta}
        while True:
            write_config(self.work, self.watched, self.sc.ou.dn, "bench-operator", resync=resync,
                         max_changes=1000000, graph_sim=self.graph.url, watch=keys["watch"],
                         delta_interval=keys["deltaInterval"])
            self.daemon.start()
            try:
                self.daemon.wait_http("/readyz", 120)
            except Failure as failure:
                if self.daemon.alive():
                    raise
                text = self.daemon.log.tail(30)
                if not any(key in text for key in NEW_KEYS):
                    raise
                why = next((line for line in text.splitlines() if any(k in line for k in NEW_KEYS)), str(failure))
                say(f"{label}: remedy serve refused the configuration: {why.strip()[:300]}")
                field = re.search(r"unknown field `([A-Za-z]+)`", why)
                self.refused = field.group(1) if field else why
                if field and keys.get(field.group(1)) is not None and field.group(1) not in required:
                    keys[field.group(1)] = None
                    say(f"{label}: trying again without `{field.group(1)}` (this binary does not know it)")
                    continue
                return ("not supported by this binary" + (f" (unknown field `{field.group(1)}`)" if field else
                                                          f" (it refused the configuration: {why.strip()[-160:]})"))
            self.daemon.wait_pass(1, 600)
            self.written = {"watch": keys["watch"], "deltaInterval": keys["deltaInterval"], "resync": resync}
            return None

    def stop(self):
        if self.daemon.alive():
            self.daemon.stop()


def random_pause(rng, period):
    """Before each re-enable: 0.2-2 s, plus a random fraction of `period`, the schedule that drives
    the path measured (the resync's 10 s, the delta or USN poll interval; 0 for notification).
    Without it the moments would be phase-locked to that schedule: each sample starts just after
    the tick that corrected the one before, and a 10 s resync would always look like 8-10 s."""
    time.sleep(rng.uniform(0.2, 2.0) + rng.uniform(0, period))


def ad_samples(sc, pick, count, timeout, rng, label, period=0.0):
    """`count` re-enables of never-before-picked accounts at random moments; (samples, why it stopped early)."""
    samples = []
    for i in range(count):
        random_pause(rng, period)
        sc.daemon.check_alive()
        sam = pick()
        r = sc.watch.reenable(sc.ou.user_dn(sam), timeout)
        if r is None:
            return samples, f"sample {i + 1}: {sam} not disabled again within {timeout} s of its re-enable"
        if "lost" in r:
            say(f"{label}: sample {i + 1} ({sam}) lost: the DC dropped the connection ({r['lost']}); not counted")
            continue
        samples.append({"user": sam, "seconds": round(r["seen"] - r["t0"], 4),
                        "modifySeconds": round(r["returned"] - r["t0"], 4), "polls": r["polls"]})
        if (i + 1) % max(1, count // 5) == 0 or i + 1 == count:
            say(f"{label}: {i + 1}/{count}, last {samples[-1]['seconds'] * 1000:.0f} ms")
    return samples, None


def entra_samples(sc, graph, pick, count, timeout, rng, label, period=0.0):
    samples = []
    for i in range(count):
        random_pause(rng, period)
        sc.daemon.check_alive()
        sam = pick()
        r = graph.reenable(entra_user_id(sam), timeout)
        if r is None:
            return samples, f"sample {i + 1}: {sam} not suspended again within {timeout} s of its re-enable"
        samples.append({"user": sam, "seconds": round(r["seen"] - r["t0"], 4),
                        "lowerBoundSeconds": round(r["asked"] - r["t0"], 4),
                        "patchSeconds": round(r["returned"] - r["t0"], 4), "polls": r["polls"]})
        if (i + 1) % max(1, count // 5) == 0 or i + 1 == count:
            say(f"{label}: {i + 1}/{count}, last {samples[-1]['seconds']:.2f} s")
    return samples, None


def samples_figure(samples, stopped, unsupported, extra=None):
    out = dict(extra or {})
    if unsupported:
        out["unsupported"] = unsupported
    if stopped:
        out["stopped"] = stopped
    if samples:
        out["summary"] = summary([s["seconds"] for s in samples])
        out["samples"] = samples
    return out


def dc_pidfile():
    """The DC's pid as its pidfile says now (None when it is not running)."""
    try:
        with open(os.path.join(os.environ["REMEDY_TEST_DC_DIR"], "samba.pid")) as f:
            return f.read().strip()
    except OSError:
        return None


def idle_window(served, seconds, label):
    """Nothing changes for `seconds` (after the first pass and a settling pause of 5 s): LDAP
    operations (remedy_ldap_operations_total, every label), Graph requests as graph-sim logged
    them (and remedy_graph_requests_total), per minute."""
    d = served.daemon
    time.sleep(5)
    dc_before = dc_pidfile()
    passes = len(d.passes())
    before = metrics()
    served.graph.clear_log()
    t0 = time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        d.check_alive(f" during the idle window ({label})")
        time.sleep(min(1.0, left))
    after = metrics()
    elapsed = time.monotonic() - t0
    http_requests, sub_requests = served.graph.requests()
    ldap_before, ldap_after = metric_sum(before, LDAP_COUNTER), metric_sum(after, LDAP_COUNTER)
    graph_before = metric_sum(before, "remedy_graph_requests_total")
    graph_after = metric_sum(after, "remedy_graph_requests_total")
    per_minute = 60 / elapsed
    dc_restarted = dc_pidfile() != dc_before or dc_before is None
    if dc_restarted:
        say(f"{label}: the DC was restarted (by someone else) during the idle window: not a steady state")
    out = {"seconds": round(elapsed, 1), "passes": len(d.passes()) - passes, "dcRestarted": dc_restarted,
           "ldapPerMinute": None if ldap_after is None else round((ldap_after - (ldap_before or 0)) * per_minute, 1),
           "ldapByOperation": ldap_counters(before, after),
           "graphHttpPerMinute": round(http_requests * per_minute, 1),
           "graphBatchSubrequestsPerMinute": round(sub_requests * per_minute, 1),
           "graphRemedyCounterPerMinute": None if graph_after is None else
           round((graph_after - (graph_before or 0)) * per_minute, 1)}
    say(f"{label}: idle {elapsed:.0f} s, {out['passes']} passes: LDAP {out['ldapPerMinute']}/min, Graph "
        f"{out['graphHttpPerMinute']} HTTP requests/min ({out['graphBatchSubrequestsPerMinute']} in $batch)")
    return out


def wait_converged(sc, graph, sams, timeout):
    deadline = time.monotonic() + timeout
    ids = {entra_user_id(s) for s in sams}
    while True:
        sc.daemon.check_alive()
        dc = sc.ou.disabled()
        ad_left = [s for s in sams if not dc.get(s.lower())]
        state = graph.state()
        entra_left = [u for u in ids if state.get(u, {}).get("accountEnabled", True)]
        if not ad_left and not entra_left:
            break
        if time.monotonic() > deadline:
            raise Failure(f"not converged within {timeout} s: {len(ad_left)} enabled in AD (e.g. {ad_left[:3]}), "
                          f"{len(entra_left)} enabled in graph-sim")
        time.sleep(2)
    waiting = not_ready(sc.args.remedy)
    while waiting and time.monotonic() < deadline:
        time.sleep(1)
        waiting = not_ready(sc.args.remedy)
    if waiting:
        raise Failure(f"{len(waiting)} manifests not Ready, e.g. {waiting[:5]}")


def cmd_recontain(args):
    n, small = args.users, args.idle_small
    if small >= n:
        raise Failure(f"--idle-small ({small}) must be below --users ({n})")
    if args.samples + args.entra_samples + 3 * args.baseline_samples > n:
        raise Failure(f"{n} users are too few for that many samples: no account is picked twice")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    say(f"seed {seed}; {n} managed identities (AD disable + Entra ID suspend), graph-sim latency {args.latency}")
    result = {"users": n, "seed": seed, "graphLatency": args.latency, "deltaInterval": args.delta_interval,
              "baselineResync": RESYNC_EVERY_10S, "idleSmall": small,
              "picking": "never the same account twice in a run (contest's fight limit is not configured, "
                         "so its default, 3 corrections in 10m per account, is never reached)"}
    with Scenario("recontain", args) as sc:
        sams = [f"br{sc.ou.suffix}-{i:05d}" for i in range(n)]
        result["ldapaddSeconds"] = round(sc.ou.create(sams), 2)
        graph = GraphSim(args.graph_sim, sc.work, sams, args.latency)
        sc.cleanups.append(graph.stop)
        t0 = time.monotonic()
        for i, sam in enumerate(sams):
            with open(os.path.join(sc.watched, f"bench-{sam}.yaml"), "w") as f:
                f.write(manifest(f"bench-{sam}", sam, f"BENCH-{i}: re-containment benchmark")
                        + "  entraId:\n    suspended: true\n")
        git(sc.watched, "add", "-A")
        git(sc.watched, "commit", "-q", "-m", f"{n} manifests")
        # The idle figure's smaller set: the first `small` manifests, in a checkout of their own.
        small_work = os.path.join(sc.work, "small")
        small_watched = os.path.join(small_work, "watched")
        os.makedirs(small_watched)
        git(small_watched, "init", "-q", "-b", "main")
        for sam in sams[:small]:
            shutil.copy(os.path.join(sc.watched, f"bench-{sam}.yaml"), small_watched)
        git(small_watched, "add", "-A")
        git(small_watched, "commit", "-q", "-m", f"{small} manifests")
        say(f"{n} manifests (and a checkout of the first {small}) written in {time.monotonic() - t0:.1f} s")

        served = Served(sc, sc.work, sc.watched, graph, args.remedy)
        sc.daemon = served.daemon
        t0 = time.monotonic()
        served.start("converge")
        wait_converged(sc, graph, sams, max(600, n / 5))
        result["convergeSeconds"] = round(time.monotonic() - t0, 1)
        say(f"converged: {n} disabled in AD and suspended in graph-sim, every manifest Ready, "
            f"{result['convergeSeconds']:.0f} s after start")
        sc.watch = DcWatch()
        order = rng.sample(sams, n)
        pick = order.pop

        figures, idle = {}, {}

        def checkpoint():
            """What is measured so far, in samples.json (copied to OUT/recontain/ even if a later step fails)."""
            with open(os.path.join(sc.work, "samples.json"), "w") as f:
                json.dump({"result": result, "figures": figures, "idle": idle}, f, indent=1)

        # 1. The fast path: change notification (USN polling behind it), Graph delta.
        why = served.start("watcher", watch=FAST_WATCH, delta=args.delta_interval, required=("watch",))
        if why:
            figures["adNotification"] = samples_figure([], None, why)
            figures["entraDelta"] = samples_figure([], None, why)
        else:
            s, stopped = ad_samples(sc, pick, args.samples, 30, rng, "AD, change notification")
            figures["adNotification"] = samples_figure(s, stopped, None, {"bySource": recontainment_counts()})
            if served.written["deltaInterval"] is None:
                figures["entraDelta"] = samples_figure([], None, "not supported by this binary (unknown field "
                                                                 "`deltaInterval`)")
            else:
                delta = parse_seconds(args.delta_interval)
                s, stopped = entra_samples(sc, graph, pick, args.entra_samples, delta + 30, rng,
                                           f"Entra ID, delta every {args.delta_interval}", period=delta)
                figures["entraDelta"] = samples_figure(s, stopped, None,
                                                       {"bySource": recontainment_counts()})
        checkpoint()
        if not figures["adNotification"].get("unsupported"):
            idle["watch"] = {"large": idle_window(served, args.idle_seconds, f"watcher on, {n} identities")}
        else:
            idle["watch"] = {"unsupported": figures["adNotification"]["unsupported"]}

        # 2. USN polling alone (notification off).
        why = figures["adNotification"].get("unsupported") or served.start("USN polling", watch=USN_WATCH,
                                                                          required=("watch",))
        if why:
            figures["adUsnPoll"] = samples_figure([], None, why)
        else:
            s, stopped = ad_samples(sc, pick, args.baseline_samples, 30, rng, "AD, USN polling every 1s", period=1.0)
            figures["adUsnPoll"] = samples_figure(s, stopped, None, {"bySource": recontainment_counts()})
        checkpoint()

        # 3. The baseline: no watcher, a resync every 10 s.
        why = served.start("baseline", resync=RESYNC_EVERY_10S, watch=NO_WATCH, delta="0s")
        if why:
            raise Failure(f"the baseline's configuration: {why}")
        result["baselineConfig"] = served.written
        s, stopped = ad_samples(sc, pick, args.baseline_samples, 60, rng, "AD, baseline: resync every 10 s", period=10.0)
        figures["adBaseline"] = samples_figure(s, stopped, None)
        s, stopped = entra_samples(sc, graph, pick, args.baseline_samples, 60, rng,
                                   "Entra ID, baseline: resync every 10 s", period=10.0)
        figures["entraBaseline"] = samples_figure(s, stopped, None)
        result["entraReenabledBy"] = graph.reenabled_by
        checkpoint()
        idle["baseline"] = {"large": idle_window(served, args.idle_seconds, f"baseline (resync every 10 s), {n} identities")}
        served.stop()
        sc.watch.close()
        sc.watch = None

        # 4. Idle cost at the smaller count: a daemon of its own on the first `small` manifests.
        small_served = Served(sc, small_work, small_watched, graph, args.remedy)
        sc.daemon = small_served.daemon
        if "unsupported" not in idle["watch"]:
            why = small_served.start("watcher, small", watch=FAST_WATCH, delta=args.delta_interval,
                                     required=("watch",))
            if why:
                raise Failure(f"the watcher ran at {n} identities but not at {small}: {why}")
            idle["watch"]["small"] = idle_window(small_served, args.idle_seconds, f"watcher on, {small} identities")
            idle["watch"]["config"] = small_served.written
        why = small_served.start("baseline, small", resync=RESYNC_EVERY_10S, watch=NO_WATCH, delta="0s")
        if why:
            raise Failure(f"the baseline's configuration: {why}")
        idle["baseline"]["small"] = idle_window(small_served, args.idle_seconds,
                                                f"baseline (resync every 10 s), {small} identities")
        small_served.stop()
        checkpoint()
        result["figures"], result["idle"] = figures, idle
    record("recontain", result, args)


def parse_seconds(text):
    match = re.fullmatch(r"([0-9.]+)(ms|s|m)?", text.strip())
    if not match:
        raise Failure(f"not a duration: {text!r}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[match.group(2)]


def table_recontain(r):
    def row(label, fig, aim=""):
        if fig.get("unsupported"):
            return f"| {label} | – | {fig['unsupported']} | | | | {aim} |"
        s = fig.get("summary")
        if not s:
            return f"| {label} | 0 | {fig.get('stopped', 'no samples')} | | | | {aim} |"
        note = f" ({fig['stopped']})" if fig.get("stopped") else ""
        return (f"| {label} | {s['n']}{note} | {s['p50'] * 1000:.0f} ms | {s['p90'] * 1000:.0f} ms | "
                f"{s['p99'] * 1000:.0f} ms | {s['max'] * 1000:.0f} ms | {aim} |")

    def p99(fig):
        return fig.get("summary", {}).get("p99")

    f = r["figures"]
    delta = parse_seconds(r["deltaInterval"])
    ad_fast = p99(f["adNotification"])
    entra_fast = p99(f["entraDelta"])
    rows = [
        f"{r['users']:,} managed identities (AD disable + Entra ID suspend); out-of-band re-enables of accounts "
        "never picked before, at random moments (0.2–2 s apart, plus a random fraction of the path's schedule: "
        "the resync's 10 s, the poll interval). AD: the administrator's LDAP modify "
        "(userAccountControl 512) → a persistent connection polling every ~5 ms sees 0x2 again. Entra ID: "
        f"`{r.get('entraReenabledBy') or 'PATCH /v1.0/users/{id}'}` `accountEnabled: true` on graph-sim "
        f"({r['graphLatency']} latency per Graph request) → `GET /v1.0/users/{{id}}` polling sees "
        "false again (late by up to one round trip). Baselines ran in the same run with fewer samples: "
        "each takes up to a resync interval.",
        "",
        "| path | samples | p50 | p90 | p99 | max | aim |",
        "|---|---:|---:|---:|---:|---:|---|",
        row("AD: change notification (`watch.notification: true`, `pollInterval: 1s`, no resync)", f["adNotification"],
            f"p99 < 1 s: {verdict(ad_fast < 1)}" if ad_fast is not None else "p99 < 1 s"),
        row("AD: USN polling alone (`notification: false`, `pollInterval: 1s`)", f["adUsnPoll"]),
        row("AD baseline: no watcher, resync every 10 s", f["adBaseline"]),
        row(f"Entra ID: delta polling (`deltaInterval: {r['deltaInterval']}`)", f["entraDelta"],
            f"p99 < {delta + 1:g} s: {verdict(entra_fast < delta + 1)}" if entra_fast is not None
            else f"p99 < {delta + 1:g} s"),
        row("Entra ID baseline: no delta, resync every 10 s", f["entraBaseline"]),
    ]
    base, fast = p99(f["adBaseline"]), ad_fast
    if base and fast:
        rows += ["", f"Ratio p99 AD baseline / change notification: {base / fast:.1f}×."]
    counted = [f"{label}: " + (", ".join(f"{k} {v}" for k, v in sorted(f[key]["bySource"].items())) or "none")
               for key, label in (("adNotification", "change notification"), ("adUsnPoll", "USN polling"),
                                  ("entraDelta", "delta")) if "bySource" in f[key]]
    if counted:
        rows += ["", "Corrections remedy itself counted (`remedy_recontainment_seconds_count` by source, per "
                 "configuration's run): " + "; ".join(counted) + "."]

    def idle_cells(w):
        if w is None:
            return "–"
        ldap = "not exported" if w["ldapPerMinute"] is None else f"{w['ldapPerMinute']:g}"
        return (f"LDAP {ldap}, Graph {w['graphHttpPerMinute']:g} ({w['graphBatchSubrequestsPerMinute']:g} in `$batch`); "
                f"{w['passes']} passes" + ("; **the DC was restarted during the window**" if w.get("dcRestarted") else ""))

    def ratio(w):
        if not w.get("small") or not w.get("large"):
            return ""
        parts = []
        for key, name in (("ldapPerMinute", "LDAP"), ("graphHttpPerMinute", "Graph")):
            a, b = w["small"].get(key), w["large"].get(key)
            if a is None or b is None:
                continue
            parts.append(f"{name} {b / a:.2f}" if a else f"{name} 0 at both" if not b else f"{name} {b:g} vs 0")
        return ", ".join(parts)

    small, large = r["idleSmall"], r["users"]
    idle = r["idle"]
    seconds = idle["baseline"]["large"]["seconds"]
    rows += ["", f"Idle cost: requests per minute with nothing changing ({seconds:.0f} s windows after the first pass "
             "and 5 s of settling; LDAP from `remedy_ldap_operations_total`, Graph HTTP requests as graph-sim "
             "logged them):", "",
             f"| configuration | {small:,} identities | {large:,} identities | ratio {large:,} / {small:,} | aim |",
             "|---|---|---|---|---|"]
    w = idle["watch"]
    if w.get("unsupported"):
        rows.append(f"| watcher on, resync never | {w['unsupported']} | | | the same at both |")
    else:
        rows.append(f"| watcher on, resync never | {idle_cells(w.get('small'))} | {idle_cells(w.get('large'))} | "
                    f"{ratio(w)} | the same at both |")
    b = idle["baseline"]
    rows.append(f"| baseline: no watcher, resync every 10 s | {idle_cells(b.get('small'))} | "
                f"{idle_cells(b.get('large'))} | {ratio(b)} | |")
    return rows


# ---------------------------------------------------------------------------------------------
# samba-tool: a shell loop of `samba-tool user disable` vs remedy, 500 users each


SAMBA_TOOL_LOOP = r'''
set -eu
while read -r u; do
    samba-tool user disable "$u" -H ldaps://localhost -s "$SMB_CONF" --option="tls verify peer = ca_and_name" \
        -U "$REMEDY_TEST_ADMIN_BIND" > /dev/null
done < "$1"
'''


def cmd_samba_tool(args):
    n = args.users
    with Scenario("samba-tool", args) as sc:
        prefix = f"bt{sc.ou.suffix}"
        tool_users = [f"{prefix}-t{i:04d}" for i in range(n)]
        remedy_users = [f"{prefix}-r{i:04d}" for i in range(n)]
        sc.ou.create(tool_users + remedy_users)
        d = sc.daemon
        d.start()
        d.wait_http("/readyz", 60)
        sc.watch = DcWatch()

        # Baseline: the administrator's shell loop (samba-tool has no scoped-account setup here:
        # it binds as Administrator, password from $PASSWD, over LDAPS with the CA verified).
        names = os.path.join(sc.work, "samba-tool-users.txt")
        with open(names, "w") as f:
            f.write("".join(f"{u}\n" for u in tool_users))
        with open(os.environ["REMEDY_TEST_ADMIN_PASSWORD_FILE"]) as f:
            password = f.read().strip()
        env = dict(os.environ, PASSWD=password,
                   SMB_CONF=os.path.join(os.environ["REMEDY_TEST_DC_DIR"], "etc", "smb.conf"))
        say(f"baseline: for u in ...; do samba-tool user disable \"$u\" -H ldaps://localhost ...; done ({n} users)")
        t0 = time.monotonic()
        loop = subprocess.run(["bash", "-c", SAMBA_TOOL_LOOP, "loop", names], env=env, text=True, capture_output=True)
        tool_seconds = time.monotonic() - t0
        if loop.returncode != 0:
            raise Failure(f"the samba-tool loop failed (exit {loop.returncode}): {loop.stderr.strip()[-500:]}")
        say(f"samba-tool loop: {tool_seconds:.1f} s")

        say(f"remedy: {n} manifests in one commit in the watched checkout (debounce 500ms, the default)")
        t0 = time.monotonic()
        sc.commit({f"bench-{u}.yaml": manifest(f"bench-{u}", u, f"BENCH-{i}: samba-tool comparison")
                   for i, u in enumerate(remedy_users)}, f"disable {n} users")
        committed = time.monotonic()
        seen, _ = sc.watch.count(sc.ou.dn, f"(&(sAMAccountName={prefix}-r*)(userAccountControl:1.2.840.113556.1.4.803:=2))",
                                 n, max(120, n))
        remedy_seconds = seen - t0

        dc = sc.ou.disabled()
        left = [u for u in tool_users + remedy_users if not dc.get(u.lower())]
        if left:
            raise Failure(f"{len(left)} accounts not disabled, e.g. {left[:5]}")
        deadline = time.monotonic() + 60
        waiting = not_ready(args.remedy)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = not_ready(args.remedy)
        if waiting:
            raise Failure(f"{len(waiting)} manifests not Ready, e.g. {waiting[:5]}")
        d.stop()
    result = {"users": n, "sambaToolSeconds": round(tool_seconds, 2), "remedySeconds": round(remedy_seconds, 2),
              "commitSeconds": round(committed - t0, 2), "ratio": round(tool_seconds / remedy_seconds, 1)}
    record("samba-tool", result, args)


def table_samba_tool(r):
    n = r["users"]
    return [
        "| path | users | time | per user | samba-tool / remedy |",
        "|---|---:|---:|---:|---:|",
        f"| baseline: shell loop of `samba-tool user disable` (Administrator, LDAPS) | {n} | {r['sambaToolSeconds']:.1f} s | "
        f"{r['sambaToolSeconds'] / n * 1000:.0f} ms | |",
        f"| remedy: {n} manifests in one commit in the watched checkout → the DC shows all disabled | {n} | "
        f"{r['remedySeconds']:.1f} s | {r['remedySeconds'] / n * 1000:.1f} ms | **{r['ratio']}×** |",
    ]


# ---------------------------------------------------------------------------------------------
# ha: three instances on etcd (issue 18): failover time, and passes in HA mode vs one instance


HA_INSTANCES = ("ha-a", "ha-b", "ha-c")
DISABLED_FILTER = "(&(objectClass=user)(userAccountControl:1.2.840.113556.1.4.803:=2))"


def etcd_endpoints():
    value = os.environ.get("REMEDY_TEST_ETCD_ENDPOINTS", "")
    endpoints = [e.strip() for e in value.split(",") if e.strip()]
    if not endpoints:
        raise Failure('REMEDY_TEST_ETCD_ENDPOINTS is not set: scripts/ha start && eval "$(scripts/ha env)"')
    return endpoints


def commit_in(tree, files, message):
    """Writes files {relative path: text} into the checkout `tree` and commits them there."""
    for path, text in files.items():
        with open(os.path.join(tree, path), "w") as f:
            f.write(text)
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", message)


class HaInstance:
    """One of the three `remedy serve` of the HA side: its own work directory (store, remedy.yaml,
    token, logs), the HA side's checkout, and `ha:` with the default lease (8s) and send timeout (3s)."""

    def __init__(self, work, remedy, watched, ou, endpoints, prefix):
        self.id = os.path.basename(work)
        os.makedirs(work)
        self.server = write_config(work, watched, ou, "bench-operator", resync=NO_RESYNC, max_changes=1000000)
        listed = ", ".join(f'"{e}"' for e in endpoints)
        with open(os.path.join(work, "remedy.yaml"), "a") as f:
            f.write(f"ha:\n  instanceId: {self.id}\n  etcd:\n    endpoints: [{listed}]\n    prefix: {prefix}\n"
                    "    insecurePlaintext: true\n")
        self.token_file = os.path.join(work, "operator.token")
        self.daemon = Daemon(work, remedy)

    def use(self):
        """Points api(), metrics() and request_reconcile() at this instance."""
        os.environ["REMEDY_SERVER"] = self.server
        os.environ["REMEDY_TOKEN_FILE"] = self.token_file

    def ha(self):
        """(ready, the `ha` object of /readyz), or None when it does not answer."""
        if not self.daemon.alive():
            return None
        try:
            status, body = http("GET", f"{self.server}/readyz", timeout=2)
        except (OSError, ValueError):
            return None
        if not isinstance(body, dict) or not isinstance(body.get("ha"), dict):
            return None
        return status == 200, body["ha"]


def wait_ha(instances, timeout):
    """Until exactly one of `instances` leads and the others are ready standbys naming it; the leader."""
    deadline = time.monotonic() + timeout
    while True:
        for instance in instances:
            instance.daemon.check_alive(f" ({instance.id})")
        views = [(i, i.ha()) for i in instances]
        leaders = [i for i, v in views if v and v[1].get("role") == "leader"]
        if len(leaders) == 1:
            leader = leaders[0]
            if all(i is leader or (v and v[0] and v[1].get("role") == "standby"
                                   and (v[1].get("leader") or {}).get("instanceId") == leader.id) for i, v in views):
                return leader
        if time.monotonic() > deadline:
            raise Failure(f"no single leader with ready standbys within {timeout} s: "
                          f"{[(i.id, v[1] if v else None) for i, v in views]}")
        time.sleep(0.05)


def disable_pass(d, commit, n, disabled_after, ou, watch, timeout):
    """Commits `n` disables (commit()), then waits until the DC shows `disabled_after` accounts of
    the OU disabled and `d` has logged passes that sent all n: {"seconds": commit → the DC shows
    them all, "passMs": the passes' own durations, "passes", "failed"}."""
    before = len(d.passes())
    t0 = time.monotonic()
    commit()
    seen, _ = watch.count(ou.dn, DISABLED_FILTER, disabled_after, timeout)
    deadline = time.monotonic() + timeout
    while sum(p.get("sent", 0) for p in d.passes()[before:]) < n:
        d.check_alive()
        if time.monotonic() > deadline:
            raise Failure(f"the DC shows the {n} disables but the passes logged did not send them all: "
                          f"{d.passes()[before:]}")
        time.sleep(0.05)
    passes = [p for p in d.passes()[before:] if p.get("sent", 0) or p.get("failed", 0)]
    return {"seconds": round(seen - t0, 3), "passMs": sum(p.get("duration_ms", 0) for p in passes),
            "passes": len(passes), "failed": sum(p.get("failed", 0) for p in passes)}


def converged_pass(d):
    """POST /v1/reconcile (to the instance use() named) → the pass logged; it must send nothing."""
    count = len(d.passes())
    t0 = time.monotonic()
    request_reconcile(accept=(202,))
    seen, p = d.wait_pass(count + 1, 300)
    if p.get("sent", 0) or p.get("failed", 0):
        raise Failure(f"a converged pass sent {p.get('sent')} actions ({p.get('failed')} failed): {p}")
    return {"seconds": round(seen - t0, 3), "passMs": p.get("duration_ms")}


def cmd_ha(args):
    n, kills, rounds = args.users, args.kills, args.rounds
    endpoints = etcd_endpoints()
    result = {"users": n, "kills": kills, "rounds": rounds, "instances": len(HA_INSTANCES),
              "settings": "ha defaults: leaseTtl 8s, sendTimeout 3s, etcd requestTimeout 2s"}
    with Scenario("ha", args) as sc:
        single_users = [f"bh{sc.ou.suffix}-s{i:05d}" for i in range(n)]
        ha_users = [f"bh{sc.ou.suffix}-h{i:05d}" for i in range(n)]
        steady_users = [f"bh{sc.ou.suffix}-t{i:03d}" for i in range(kills)]
        failover_users = [f"bh{sc.ou.suffix}-f{i:03d}" for i in range(kills)]
        sc.ou.create(single_users + ha_users + steady_users + failover_users)
        sc.watch = DcWatch()

        # One instance, no ha: (the Scenario's daemon and checkout).
        d = sc.daemon
        d.start()
        d.wait_http("/readyz", 120)
        files = {f"bench-{s}.yaml": manifest(f"bench-{s}", s, f"BENCH-{i}: ha benchmark") for i, s in enumerate(single_users)}
        single = {"disable": disable_pass(d, lambda: sc.commit(files, f"{n} manifests"), n, n, sc.ou, sc.watch,
                                          max(300, n / 5))}
        say(f"one instance: {n} disables, commit → the DC shows all in {single['disable']['seconds']:.2f} s "
            f"(passes {single['disable']['passMs']} ms)")
        single["converged"] = [converged_pass(d) for _ in range(rounds)]
        say(f"one instance: converged passes {[c['seconds'] for c in single['converged']]} s")
        d.stop()

        # Three instances on etcd, on a checkout of their own.
        watched = os.path.join(sc.work, "ha-watched")
        os.makedirs(watched)
        git(watched, "init", "-q", "-b", "main")
        commit_in(watched, {"README.md": "remediation manifests (scripts/bench ha)\n"}, "empty manifest repository")
        prefix = f"/remedy-bench/{uuid.uuid4()}/"
        instances = [HaInstance(os.path.join(sc.work, name), args.remedy, watched, sc.ou.dn, endpoints, prefix)
                     for name in HA_INSTANCES]
        sc.cleanups.append(lambda: [i.daemon.stop_quietly() for i in instances])
        for instance in instances:
            instance.daemon.start()
        leader = wait_ha(instances, 120)
        say(f"three instances: {leader.id} leads, the others are ready standbys")
        files = {f"bench-{s}.yaml": manifest(f"bench-{s}", s, f"BENCH-{i}: ha benchmark") for i, s in enumerate(ha_users)}
        ha = {"disable": disable_pass(leader.daemon, lambda: commit_in(watched, files, f"{n} manifests"), n, 2 * n,
                                      sc.ou, sc.watch, max(300, n / 5))}
        if wait_ha(instances, 30) is not leader:
            raise Failure("the leader changed during the disable pass: the figure would not be one pass")
        say(f"three instances: {n} disables, commit → the DC shows all in {ha['disable']['seconds']:.2f} s "
            f"(passes {ha['disable']['passMs']} ms)")
        leader.use()
        ha["converged"] = [converged_pass(leader.daemon) for _ in range(rounds)]
        say(f"three instances: converged passes {[c['seconds'] for c in ha['converged']]} s")

        # Failover: the leader killed, a change committed at once; and the same change to a steady leader.
        steady, failover, samples = [], [], []
        for k in range(kills):
            sam = steady_users[k]
            t0 = time.monotonic()
            commit_in(watched, {f"bench-{sam}.yaml": manifest(f"bench-{sam}", sam, f"BENCH-T{k}: steady")},
                      f"disable {sam}")
            seen, _ = sc.watch.disabled(sc.ou.user_dn(sam), 60)
            steady.append(seen - t0)

            sam = failover_users[k]
            victim = leader
            t0 = time.monotonic()
            victim.daemon.kill_9()
            commit_in(watched, {f"bench-{sam}.yaml": manifest(f"bench-{sam}", sam, f"BENCH-F{k}: failover")},
                      f"disable {sam}")
            seen, _ = sc.watch.disabled(sc.ou.user_dn(sam), 120)
            failover.append(seen - t0)
            leader = wait_ha([i for i in instances if i is not victim], 60)
            samples.append({"killed": victim.id, "took": leader.id, "seconds": round(seen - t0, 3),
                            "steadySeconds": round(steady[-1], 3)})
            say(f"kill {k + 1}/{kills}: {victim.id} killed → {leader.id} acted, the DC showed the change after "
                f"{seen - t0:.2f} s (steady: {steady[-1]:.2f} s)")
            victim.daemon.start()
            leader = wait_ha(instances, 120)
        with open(os.path.join(sc.work, "samples.json"), "w") as f:
            json.dump(samples, f, indent=1)

        # One history, verified by every instance.
        chains = {}
        for instance in instances:
            instance.use()
            status, body = api("GET", "/v1/history/verify")
            if status != 200 or not body.get("verified"):
                raise Failure(f"{instance.id}: GET /v1/history/verify: {status} {body}")
            chains[instance.id] = (body.get("records"), body.get("headHash"))
        deadline = time.monotonic() + 30
        while len(set(chains.values())) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            for instance in instances:
                instance.use()
                body = api("GET", "/v1/history/verify")[1]
                chains[instance.id] = (body.get("records"), body.get("headHash"))
        if len(set(chains.values())) != 1:
            raise Failure(f"the instances serve different histories: {chains}")
        dc = sc.ou.disabled()
        left = [s for s in single_users + ha_users + steady_users + failover_users if not dc.get(s.lower())]
        if left:
            raise Failure(f"{len(left)} accounts not disabled at the end, e.g. {left[:5]}")
        for instance in instances:
            instance.daemon.stop()

    def best(side):
        return min(side["converged"], key=lambda c: c["seconds"])
    result["single"], result["ha"] = single, ha
    result["disableRatio"] = round(ha["disable"]["seconds"] / single["disable"]["seconds"], 2)
    result["convergedRatio"] = round(best(ha)["seconds"] / best(single)["seconds"], 2)
    result["history"] = {"records": next(iter(chains.values()))[0], "sameOnAll": True}
    if failover:
        result["failover"] = summary(failover)
        result["steady"] = summary(steady)
    record("ha", result, args)


def table_ha(r):
    n = r["users"]
    single, ha = r["single"], r["ha"]

    def best(side):
        return min(side["converged"], key=lambda c: c["seconds"])
    lines = [
        f"Three instances ({r['settings']}) vs one instance without `ha:`, in the same run.", "",
        "| figure | one instance | three instances on etcd | ratio | aim |",
        "|---|---:|---:|---:|---|",
        f"| {n:,} disables: one commit → the DC shows them all (the passes' own time) | "
        f"{single['disable']['seconds']:.2f} s ({single['disable']['passMs'] / 1000:.2f} s) | "
        f"{ha['disable']['seconds']:.2f} s ({ha['disable']['passMs'] / 1000:.2f} s) | **{r['disableRatio']}** | "
        f"≤ 1.2: {verdict(r['disableRatio'] <= 1.2)} |",
        f"| converged pass over {n:,}: `POST /v1/reconcile` → the pass logged, best of {r['rounds']} (its own time) | "
        f"{best(single)['seconds']:.3f} s ({best(single)['passMs']} ms) | {best(ha)['seconds']:.3f} s "
        f"({best(ha)['passMs']} ms) | **{r['convergedRatio']}** | ≤ 1.2: {verdict(r['convergedRatio'] <= 1.2)} |",
    ]
    if "failover" in r:
        f, s = r["failover"], r["steady"]
        lines += [
            "",
            "| path | changes | p50 | p90 | p99 | max | aim |",
            "|---|---:|---:|---:|---:|---:|---|",
            f"| failover: the leader killed (SIGKILL), a manifest committed at once → the DC shows it | {f['n']} | "
            f"{f['p50']:.2f} s | {f['p90']:.2f} s | {f['p99']:.2f} s | {f['max']:.2f} s | p99 < 10 s: {verdict(f['p99'] < 10)} |",
            f"| baseline: the same change with the leader running | {s['n']} | {s['p50']:.2f} s | {s['p90']:.2f} s | "
            f"{s['p99']:.2f} s | {s['max']:.2f} s | |",
        ]
    lines += ["", f"Every instance verified the same history of {r['history']['records']} records at the end."]
    return lines


# ---------------------------------------------------------------------------------------------
# cargo benches: their markdown output, recorded


def cmd_cargo(args):
    with open(args.file) as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    result = {"output": "\n".join(lines), "argv": args.argv}
    if args.name == "ad":
        rows = [line for line in lines if line.startswith("| disable") or line.startswith("| observe")]
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            key = "disable" if row.startswith("| disable") else "observe"
            result[key] = {"users": cells[1], "remedy": cells[2], "baseline": cells[3], "ratio": float(cells[4])}
        if "disable" not in result:
            raise Failure(f"no result table in the output of the ad bench ({args.file})")
    else:
        match = re.search(r"ratio: ([0-9.]+)x", text)
        if not match:
            raise Failure(f"no ratio in the output of the {args.name} bench ({args.file})")
        result["ratio"] = float(match.group(1))
    record(args.name, result, args)


def table_cargo(r):
    """The bench's own output, with a blank line around each table (markdown needs them)."""
    out = []
    for line in r["output"].splitlines():
        if out and out[-1] and line.startswith("|") != out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# results


FIGURES = [
    ("ad", "Apply: AD disables through remedy vs `ldapmodify` (`cargo bench --bench ad`)", table_cargo,
     "aim: disable ratio ≤ 1.0"),
    ("scale", "Scale: converged resync, memory and start-up with many manifests", table_scale, ""),
    ("latency", "Commit-to-action latency", table_latency, ""),
    ("recontain", "Re-containment: an out-of-band re-enable to the account disabled again, and idle cost",
     table_recontain, ""),
    ("entra", "Entra ID: batched vs one at a time (`cargo bench --bench entra`)", table_cargo, "aim: ≥ 15×"),
    ("samba-tool", "What an administrator would otherwise use: `samba-tool user disable` in a shell loop",
     table_samba_tool, ""),
    ("store_memory", "Store memory: settling a large pass in chunks vs one sled transaction "
     "(`cargo bench --bench store_memory`)", table_cargo, ""),
    ("ha", "Several instances on etcd: failover, and passes in HA mode vs one instance", table_ha, ""),
]


def verdict(ok):
    return "met" if ok else "**not met**"


def run_text(*argv):
    try:
        return subprocess.run(argv, text=True, capture_output=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    debian = ""
    if os.path.exists("/etc/debian_version"):
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    dirty = run_text("git", "status", "--porcelain", "--untracked-files=no")
    return {"nproc": os.cpu_count(), "memoryGiB": round(mem_kib / 1024 / 1024, 1), "cpu": cpu,
            "kernel": platform.release(), "debian": debian, "samba": run_text("samba", "--version"),
            "rustc": run_text("rustc", "--version"), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": run_text("git", "rev-parse", "HEAD"), "treeDirty": bool(dirty)}


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remedy_binary(args):
    """The binary a scenario runs, as recorded: its path and sha256, checked against
    --remedy-sha256 when given (a mismatch fails the figure: it would not say what ran)."""
    path = os.path.abspath(args.remedy)
    if not os.path.isfile(path):
        raise Failure(f"no remedy binary at {path}")
    actual = file_sha256(path)
    expected = getattr(args, "remedy_sha256", None)
    if expected and actual != expected.lower():
        raise Failure(f"{path} has sha256 {actual}, not {expected}: the binary changed during the run")
    return {"path": path, "sha256": actual}


def results_path(out):
    return os.path.join(out, "results.json")


def record(name, result, args):
    os.makedirs(args.out, exist_ok=True)
    path = results_path(args.out)
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data.setdefault("figures", {})
    result["machine"] = machine()
    binary = getattr(args, "remedy", None)
    if binary:
        # The exact binary the figure measured; the cargo benches run their own executables.
        result["remedyBinary"] = remedy_binary(args)
        # With --no-build the binary may be older than the commit recorded above.
        result["machine"]["remedyBuilt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(binary)))
    result["smoke"] = bool(getattr(args, "smoke", False))
    data["figures"][name] = result
    data["machine"] = result["machine"]
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print()
    print("\n".join(figure_markdown(name, result)))
    if "remedyBinary" in result:
        print()
        print(f"remedy binary: {result['remedyBinary']['path']}, sha256 {result['remedyBinary']['sha256']}")
    print()
    write_report(args.out)


def figure_markdown(name, result):
    title, table, aim = next((t, f, a) for k, t, f, a in FIGURES if k == name)
    lines = [f"### {title}{' (smoke size)' if result.get('smoke') else ''}", ""]
    lines += table(result)
    if aim:
        lines += ["", aim]
    return lines


def write_report(out):
    with open(results_path(out)) as f:
        data = json.load(f)
    m = data["machine"]
    lines = ["# remedy benchmarks (scripts/bench)", "",
             f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memoryGiB']} GiB, Linux {m['kernel']}, "
             f"Debian {m['debian']}, Samba {m['samba'].replace('Version ', '')}, {m['rustc']}; "
             f"commit {m['commit'][:12]}{' (working tree modified)' if m['treeDirty'] else ''}, {m['date']}.", ""]
    # The end-to-end figures name the binary they ran (results files from before the pin do not).
    binaries = {}
    for name, *_ in FIGURES:
        ran = data["figures"].get(name, {}).get("remedyBinary")
        if ran:
            binaries.setdefault((ran["sha256"], ran["path"]), []).append(name)
    for (sha, path), names in binaries.items():
        lines += [f"remedy binary run by {', '.join(names)}: `{path}`, sha256 `{sha}`.", ""]
    if binaries:
        lines += ["(The cargo benches ad, entra and store_memory run their own bench executables.)", ""]
    for name, *_ in FIGURES:
        result = data["figures"].get(name)
        if result:
            lines += figure_markdown(name, result)
            ran = result.get("remedyBinary")
            binary = f", remedy sha256 {ran['sha256'][:16]}" if ran else ""
            lines += ["", f"_ran {result['machine']['date']} at {result['machine']['commit'][:12]}{binary}_", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))


def cmd_report(args):
    write_report(args.out)
    with open(os.path.join(args.out, "results.md")) as f:
        print(f.read())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "dcwatch":
        return dcwatch_main()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("scale", "latency", "samba-tool", "recontain", "ha"):
        p = sub.add_parser(name)
        p.add_argument("--remedy", required=True)
        p.add_argument("--remedy-sha256", help="fail unless --remedy has this sha256 (before and after)")
        p.add_argument("--out", required=True)
        p.add_argument("--keep", action="store_true")
        p.add_argument("--smoke", action="store_true")
        if name == "scale":
            p.add_argument("--users", type=int, default=10_000)
            p.add_argument("--rounds", type=int, default=3)
        elif name == "latency":
            p.add_argument("--commits", type=int, default=100)
            p.add_argument("--seed", type=int)
        elif name == "recontain":
            p.add_argument("--users", type=int, default=10_000)
            p.add_argument("--samples", type=int, default=100, help="AD re-enables with the watcher")
            p.add_argument("--entra-samples", type=int, default=20)
            p.add_argument("--baseline-samples", type=int, default=20,
                           help="re-enables of each slower path (resync baselines, USN polling alone)")
            p.add_argument("--idle-seconds", type=float, default=120)
            p.add_argument("--idle-small", type=int, default=1000, help="the smaller count of the idle figure")
            p.add_argument("--delta-interval", default="5s")
            p.add_argument("--latency", default="50ms", help="graph-sim's latency per Graph request")
            p.add_argument("--graph-sim", help="graph-sim's binary (target/release/graph-sim)")
            p.add_argument("--seed", type=int)
        elif name == "ha":
            p.add_argument("--users", type=int, default=2000, help="disables in one commit, each side")
            p.add_argument("--kills", type=int, default=20, help="failover samples (leader killed)")
            p.add_argument("--rounds", type=int, default=3, help="converged passes, each side")
        else:
            p.add_argument("--users", type=int, default=500)
    p = sub.add_parser("cargo")
    p.add_argument("--out", required=True)
    p.add_argument("--name", choices=("ad", "entra", "store_memory"), required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--argv", default="")
    p.add_argument("--smoke", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if getattr(args, "remedy", None):
            remedy_binary(args)  # before anything runs: the pinned binary is the one named
        {"scale": cmd_scale, "latency": cmd_latency, "samba-tool": cmd_samba_tool, "recontain": cmd_recontain,
         "ha": cmd_ha, "cargo": cmd_cargo,
         "report": cmd_report}[args.command](args)
    except Failure as failure:
        print(f"bench {args.command}: FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
