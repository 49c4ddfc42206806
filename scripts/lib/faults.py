#!/usr/bin/env python3
"""The helper of `scripts/reliability crashloop` and `scripts/reliability graph-outage`.

    faults.py seed       --work DIR --users FILE --entra-every K     graph-sim seed and the manifests
    faults.py crashloop  --work DIR --remedy BIN --rounds R --ldap-ou DN --sim URL [--seed S]
    faults.py outage     --work DIR --remedy BIN --seconds S --ldap-ou DN --sim URL [--fault KIND]

Shared layout of DIR (made by scripts/reliability):
    users.txt           the sAMAccountNames, one a line (UPN: <sam>@remedy.test)
    entra.txt           the subset whose manifests also suspend the user in Entra ID
    graph-seed.yaml     graph-sim's seed: every user, cloud-only and enabled
    manifests/          what remedy serve watches (a plain directory)
    remedy.yaml         remedy's configuration; operator.token the API token
    remedy.pid          the pid of the running `remedy serve` (the shell's trap stops it)
    run-NN.log          one log per start of remedy serve
Everything the checks find goes to DIR/check.json (and rounds.json / outage.json), the history to
DIR/history.json; the shell copies them to target/reliability/<check>/.
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from churn import condition, dc_users, remedy_json, statuses  # noqa: E402

TENANT = "6f1c2a34-0000-4000-8000-00000000d3e0"
CLIENT_ID = "0b7d9e51-0000-4000-8000-0000000a9901"
SECRET = "reliability-secret-not-a-real-one"
SUCCESS = ("succeeded", "drift-corrected")


def say(text):
    print(f"  {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# setup


def read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def user_id(sam):
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{sam}.remedy.test"))


def cmd_seed(args):
    users = read_lines(args.users)
    entra = [u for i, u in enumerate(users) if i % args.entra_every == 0]
    with open(os.path.join(args.work, "entra.txt"), "w") as f:
        f.write("".join(f"{u}\n" for u in entra))
    lines = [f"tenantId: {TENANT}", f"clientId: {CLIENT_ID}", f"clientSecret: {SECRET}", "tokenLifetime: 1h",
             "confirmCompromisedPerSecond: 1", "pageSize: 100", "users:"]
    for sam in users:
        lines += [f"  - id: {user_id(sam)}", f"    userPrincipalName: {sam}@remedy.test"]
    # One user no manifest names: graph-outage's own requests that drain the fault queue use it.
    lines += [f"  - id: {user_id('drain')}", "    userPrincipalName: drain@remedy.test"]
    with open(os.path.join(args.work, "graph-seed.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.work, "graph.secret"), "w") as f:
        f.write(SECRET)
    os.chmod(os.path.join(args.work, "graph.secret"), 0o600)
    directory = os.path.join(args.work, args.manifests or "manifests")
    os.makedirs(directory, exist_ok=True)
    in_entra = set(entra)
    for i, sam in enumerate(users):
        spec = "  activeDirectory:\n    disabled: true\n"
        if sam in in_entra:
            spec += "  entraId:\n    suspended: true\n"
        name = f"rel-{sam}"
        text = (f"apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n"
                f"  reason: \"REL-{i}: reliability check\"\n  target:\n    samAccountName: {sam}\n{spec}")
        with open(os.path.join(directory, f"{name}.yaml"), "w") as f:
            f.write(text)
    say(f"{len(users)} manifests (disable in AD), {len(entra)} of them also suspend in Entra ID; "
        f"graph-sim seeded with {len(users) + 1} cloud-only users")


# ---------------------------------------------------------------------------------------------
# the directories


def ldap_env():
    return dict(os.environ, LDAPTLS_CACERT=os.environ["REMEDY_TEST_CA_FILE"])


def ldap_admin(tool, *args, stdin=None):
    return subprocess.run(
        [tool, "-x", "-H", os.environ["REMEDY_TEST_LDAPS_URL"], "-D", os.environ["REMEDY_TEST_ADMIN_BIND"],
         "-y", os.environ["REMEDY_TEST_ADMIN_PASSWORD_FILE"], *args],
        env=ldap_env(), text=True, input=stdin, capture_output=True, check=True,
    ).stdout


def re_enable_ad(ou, sams):
    """As the administrator: userAccountControl back to 512 (a normal, enabled account)."""
    ldif = "".join(f"dn: CN={sam},{ou}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n-\n\n"
                   for sam in sams)
    ldap_admin("ldapmodify", stdin=ldif)


def http(method, url, body=None, headers=None, form=None, timeout=10):
    data = None
    headers = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else None
        except ValueError:
            return error.code, raw.decode(errors="replace")


class Graph:
    """graph-sim as an administrator sees it: /_sim/state, and Graph itself with the app's token."""

    def __init__(self, url):
        self.url = url
        self.token = None

    def state(self):
        status, body = http("GET", f"{self.url}/_sim/state")
        assert status == 200, f"GET /_sim/state: {status}"
        return {u["userPrincipalName"].split("@")[0].lower(): u for u in body}

    def log(self):
        status, body = http("GET", f"{self.url}/_sim/log")
        assert status == 200, f"GET /_sim/log: {status}"
        return body

    def inject(self, fault):
        status, body = http("POST", f"{self.url}/_sim/faults", body=fault)
        assert status == 204, f"POST /_sim/faults {fault}: {status} {body}"

    def get_token(self):
        status, body = http("POST", f"{self.url}/{TENANT}/oauth2/v2.0/token", form={
            "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET,
            "scope": "00000003-0000-0000-c000-000000000000/.default"})
        assert status == 200, f"token: {status} {body}"
        self.token = body["access_token"]

    def call(self, method, path, body=None):
        if self.token is None:
            self.get_token()
        return http(method, f"{self.url}/v1.0{path}", body=body, headers={"Authorization": f"Bearer {self.token}"})

    def re_enable(self, sams):
        for sam in sams:
            status, body = self.call("PATCH", f"/users/{user_id(sam)}", {"accountEnabled": True})
            assert status == 204 or status == 200, f"PATCH {sam} accountEnabled=true: {status} {body}"


# ---------------------------------------------------------------------------------------------
# remedy serve


class Daemon:
    def __init__(self, work, remedy):
        self.work, self.remedy = work, remedy
        self.process = None
        self.runs = 0
        self.log_path = None

    def start(self):
        self.runs += 1
        self.log_path = os.path.join(self.work, f"run-{self.runs:02d}.log")
        log = open(self.log_path, "w")
        env = dict(os.environ, NO_COLOR="1", REMEDY_LOG="info")
        self.process = subprocess.Popen([self.remedy, "serve", "--config", os.path.join(self.work, "remedy.yaml")],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        with open(os.path.join(self.work, "remedy.pid"), "w") as f:
            f.write(str(self.process.pid))
        self.started = time.monotonic()
        return self.process.pid

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, text, timeout):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.alive():
                raise Failure(f"remedy serve exited ({self.process.returncode}) before logging {text!r}; "
                              f"{self.log_path}:\n{tail(self.log())}")
            if time.monotonic() > deadline:
                raise Failure(f"no {text!r} in {self.log_path} within {timeout} s:\n{tail(self.log())}")
            time.sleep(0.05)

    def kill_9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        os.remove(os.path.join(self.work, "remedy.pid"))

    def terminate(self, timeout=30):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise Failure(f"remedy serve did not stop within {timeout} s of SIGTERM")
        os.remove(os.path.join(self.work, "remedy.pid"))
        return code

    def passes(self):
        """The "reconciled" lines of the current run: dicts of sent, failed, recovered, duration_ms."""
        out = []
        for line in self.log().splitlines():
            if line.rstrip().endswith("reconciled") or " reconciled" in line and "sent=" in line:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                out.append({k: int(fields[k]) for k in ("sent", "failed", "recovered", "duration_ms") if k in fields})
        return out


def interrupted_intents(log):
    line = next((l for l in log.splitlines() if "actions were interrupted by the last stop" in l), "")
    match = re.search(r"intents=(\d+)", line)
    return int(match.group(1)) if match else 0


class Failure(Exception):
    pass


def tail(text, lines=15):
    return "\n".join(text.splitlines()[-lines:])


def request_reconcile():
    server = os.environ["REMEDY_SERVER"]
    with open(os.environ["REMEDY_TOKEN_FILE"]) as f:
        token = f.read().strip()
    status, body = http("POST", f"{server}/v1/reconcile", headers={"Authorization": f"Bearer {token}"})
    if status not in (200, 202):
        raise Failure(f"POST /v1/reconcile: {status} {body}")


def wait_ready_api(daemon, timeout=30):
    server = os.environ["REMEDY_SERVER"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server}/healthz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if not daemon.alive():
            raise Failure(f"remedy serve exited ({daemon.process.returncode}):\n{tail(daemon.log())}")
        if time.monotonic() > deadline:
            raise Failure(f"remedy serve's API did not answer within {timeout} s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# crashloop


def converged(ou, users, entra, graph):
    """(AD accounts not disabled, Entra subset users not suspended, others touched in Entra)."""
    dc = dc_users(ou)
    state = graph.state()
    ad_left = [u for u in users if not dc.get(u.lower(), False)]
    entra_left = [u for u in entra if state[u.lower()]["accountEnabled"]]
    touched = [u for u in users if u not in entra and not state[u.lower()]["accountEnabled"]]
    return ad_left, entra_left, touched


def wait_quiet(daemon, ou, users, entra, graph, timeout):
    """Until the directories show every change and a pass requested after that sends nothing."""
    started = time.monotonic()
    deadline = started + timeout
    converged_at = None
    while True:
        if not daemon.alive():
            raise Failure(f"remedy serve exited ({daemon.process.returncode}):\n{tail(daemon.log())}")
        ad_left, entra_left, touched = converged(ou, users, entra, graph)
        if touched:
            raise Failure(f"remedy suspended users in Entra ID no manifest asks for: {touched[:10]}")
        if not ad_left and not entra_left:
            if converged_at is None:
                converged_at = time.monotonic() - started
            before = len(daemon.passes())
            request_reconcile()
            while len(daemon.passes()) == before:
                if not daemon.alive() or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            passes = daemon.passes()
            if len(passes) > before and passes[-1].get("sent") == 0 and passes[-1].get("failed") == 0:
                return converged_at, time.monotonic() - started
        if time.monotonic() > deadline:
            raise Failure(f"not converged within {timeout} s: {len(ad_left)} AD accounts enabled "
                          f"(e.g. {ad_left[:5]}), {len(entra_left)} Entra users not suspended (e.g. {entra_left[:5]}); "
                          f"last passes {daemon.passes()[-3:]}")
        time.sleep(0.2)


def cmd_crashloop(args):
    users = read_lines(os.path.join(args.work, "users.txt"))
    entra = read_lines(os.path.join(args.work, "entra.txt"))
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    say(f"seed {seed} (--seed {seed} repeats the kill moments and the re-enabled users)")
    graph = Graph(args.sim)
    daemon = Daemon(args.work, args.remedy)
    rounds = []
    changes_ad = collections.Counter({u: 1 for u in users})      # the initial disable
    changes_entra = collections.Counter({u: 1 for u in entra})   # the initial suspend
    re_enabled_at = collections.defaultdict(list)  # user -> [(provider, unix time)]
    summary = {"seed": seed, "users": len(users), "entraUsers": len(entra), "rounds": rounds}
    out = os.path.join(args.work, "rounds.json")
    try:
        pending_ad, pending_entra = set(users), set(entra)
        daemon.start()
        for r in range(1, args.rounds + 1):
            info = {"round": r, "pid": daemon.process.pid}
            if r > 1:
                # Drift for this round: a random subset re-enabled by an administrator, then a pass asked for.
                k_ad = rng.randint(max(1, len(users) // 20), max(1, len(users) // 4))
                k_en = rng.randint(0, max(0, len(entra) // 4))
                pending_ad = set(rng.sample(users, k_ad))
                pending_entra = set(rng.sample(entra, k_en))
                now = time.time()
                re_enable_ad(args.ldap_ou, sorted(pending_ad))
                graph.re_enable(sorted(pending_entra))
                for u in pending_ad:
                    changes_ad[u] += 1
                    re_enabled_at[u].append(("ad", now))
                for u in pending_entra:
                    changes_entra[u] += 1
                    re_enabled_at[u].append(("entra", now))
                info["reEnabled"] = {"ad": k_ad, "entra": k_en}
                request_reconcile()
            pending = len(pending_ad) + len(pending_entra)
            mode = "timer" if rng.random() < 1 / 3 else "progress"
            target = rng.randint(1, max(1, pending - 1))
            delay = rng.uniform(0.2, 3.0)
            t0 = time.monotonic()
            done = 0
            while True:
                if not daemon.alive():
                    raise Failure(f"round {r}: remedy serve exited by itself ({daemon.process.returncode}):\n"
                                  f"{tail(daemon.log())}")
                dc = dc_users(args.ldap_ou)
                state = graph.state() if pending_entra else {}
                done = sum(1 for u in pending_ad if dc.get(u.lower())) + \
                    sum(1 for u in pending_entra if not state[u.lower()]["accountEnabled"])
                elapsed = time.monotonic() - t0
                if (mode == "progress" and done >= target) or (mode == "timer" and elapsed >= delay) \
                        or done >= pending or elapsed > 60:
                    break
                if mode == "timer":
                    time.sleep(min(0.02, max(0.0, delay - elapsed)))
            daemon.kill_9()
            killed_after = time.monotonic() - t0
            ad_left, entra_left, _ = converged(args.ldap_ou, users, entra, graph)
            done_after = pending - sum(1 for u in ad_left if u in pending_ad) - sum(1 for u in entra_left if u in pending_entra)
            where = "before any change showed" if done == 0 else ("mid-reconcile" if done < pending else "after every change showed")
            info.update(mode=mode, target=target if mode == "progress" else None,
                        delay=round(delay, 2) if mode == "timer" else None, pending=pending, doneAtKill=done,
                        doneAfterKill=done_after, killedAfter=round(killed_after, 2), where=where)
            # Restart on the same store, and wait until all is done and quiet again.
            daemon.start()
            wait_ready_api(daemon)
            info["interruptedIntents"] = interrupted_intents(daemon.log())
            if info["interruptedIntents"] and rng.random() < 0.25:
                # A second SIGKILL during the restart's first pass: the one that settles the interrupted
                # actions and sends again what they did not do.
                daemon.wait_log("settled an interrupted action", 30)
                time.sleep(rng.uniform(0.0, 1.5))
                daemon.kill_9()
                settled_before = len(re.findall("settled an interrupted action", daemon.log()))
                daemon.start()
                wait_ready_api(daemon)
                info["killedDuringRecovery"] = {"settledBefore": settled_before,
                                                "interruptedIntents": interrupted_intents(daemon.log())}
            converged_in, quiet_in = wait_quiet(daemon, args.ldap_ou, users, entra, graph, timeout=180)
            info["settled"] = len(re.findall("settled an interrupted action", daemon.log())) + \
                info.get("killedDuringRecovery", {}).get("settledBefore", 0)
            info["convergedAfterRestart"] = round(converged_in, 2)
            info["quietAfterRestart"] = round(quiet_in, 2)
            rounds.append(info)
            say(f"round {r:2d}: {pending:4d} changes pending; SIGKILL {where} ({mode}, {killed_after:.2f} s in, "
                f"{done}/{pending} visible, {done_after} once dead); restart found {info['interruptedIntents']} "
                f"interrupted intents, settled {info['settled']}"
                + (f"; SIGKILL again in the restart's first pass ({again['settledBefore']} settled by then; the next "
                   f"start found {again['interruptedIntents']} interrupted)" if (again := info.get("killedDuringRecovery")) else "")
                + f"; converged {converged_in:.1f} s after the restart")
        summary["history"] = finish(args, daemon, users, entra, changes_ad, changes_entra, re_enabled_at, rounds)
    except Failure as failure:
        summary["failure"] = str(failure)
        print(f"\n  FAILURE: {failure}", file=sys.stderr)
        return 1
    finally:
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if not summary["history"]["failures"] else 1


def action_records(history):
    return [r for r in history if r["event"].get("kind") == "action"]


def identity_sam(event):
    identity = str(event.get("identity", ""))
    return identity.split(":", 1)[1].lower() if identity.startswith("sam:") else identity.lower()


def verify_history(remedy):
    result = subprocess.run([remedy, "history", "verify"], text=True, capture_output=True)
    print("  remedy history verify: " + (result.stdout.strip() or result.stderr.strip()).replace("\n", "; "))
    return result.returncode == 0


def finish(args, daemon, users, entra, changes_ad, changes_entra, re_enabled_at, rounds):
    """The end of a crashloop: the history against the changes made, the chain, a clean stop and
    a start that finds nothing interrupted."""
    failures, notes = [], []
    history = remedy_json(args.remedy, "history")
    with open(os.path.join(args.work, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    if not verify_history(args.remedy):
        failures.append("remedy history verify failed")
    actions = action_records(history)
    outcomes = collections.Counter((r["event"]["action"], r["event"]["outcome"]) for r in actions)
    successes = collections.defaultdict(list)  # (user, action) -> [(at, outcome, error)]
    for record in actions:
        event = record["event"]
        if event["outcome"] in SUCCESS:
            successes[(identity_sam(event), event["action"])].append((record["at"], event["outcome"], event.get("error")))
        elif event["outcome"] == "failed" and "interrupted by a restart" not in (event.get("error") or ""):
            notes.append(f"record {record['id']}: {event['action']} failed on {identity_sam(event)}: {event.get('error')}")
        elif event["outcome"] not in ("failed",):
            failures.append(f"record {record['id']}: unexpected outcome {event['outcome']} of {event['action']} "
                            f"on {identity_sam(event)}")
    expected = {}
    for u in users:
        expected[(u.lower(), "disable-account")] = changes_ad[u]
    for u in entra:
        expected[(u.lower(), "suspend-user")] = changes_entra[u]
    for key in sorted(set(expected) | set(successes)):
        got, want = len(successes.get(key, [])), expected.get(key, 0)
        if got != want:
            failures.append(f"{key[0]}: {got} successful {key[1]} record(s), {want} change(s) made "
                            f"({'duplicates' if got > want else 'missing'}): {successes.get(key, [])}")
    # Each re-enable is followed by exactly one correction: the k-th success comes after the (k-1)-th re-enable.
    for u, events in re_enabled_at.items():
        for provider, action in (("ad", "disable-account"), ("entra", "suspend-user")):
            times = sorted(t for p, t in events if p == provider)
            got = sorted(successes.get((u.lower(), action), []))
            for k, t in enumerate(times, start=1):
                if k < len(got) and parse_time(got[k][0]) < t - 1.0:
                    failures.append(f"{u}: {action} success #{k + 1} at {got[k][0]} is before re-enable #{k} "
                                    f"({time.strftime('%H:%M:%S', time.gmtime(t))})")
    # Stop; start once more: nothing interrupted, nothing to do.
    code = daemon.terminate()
    if code != 0:
        failures.append(f"remedy serve exited {code} on SIGTERM")
    daemon.start()
    wait_ready_api(daemon)
    daemon.wait_log(" reconciled", 120)
    log = daemon.log()
    interrupted = "actions were interrupted by the last stop" in log
    if interrupted:
        failures.append("after the SIGTERM, the next start found interrupted actions: "
                        + next(line for line in log.splitlines() if "interrupted by the last stop" in line))
    first = daemon.passes()[0]
    if first.get("sent") != 0 or first.get("recovered") != 0:
        failures.append(f"the start after the SIGTERM still had work: {first}")
    code = daemon.terminate()
    if code != 0:
        failures.append(f"remedy serve exited {code} on the final SIGTERM")
    for path in sorted(os.listdir(args.work)):
        if path.startswith("run-") and "panicked" in open(os.path.join(args.work, path)).read():
            failures.append(f"{path}: remedy panicked")
    recovery = collections.Counter()
    for record in actions:
        error = record["event"].get("error") or ""
        if "confirmed when read again" in error:
            recovery["confirmed applied"] += 1
        elif "interrupted by a restart" in error:
            recovery["not applied (sent again)"] += 1
    result = {
        "records": len(history),
        "recovery": dict(recovery),
        "actionOutcomes": {f"{a} {o}": n for (a, o), n in sorted(outcomes.items())},
        "changesMade": {"ad": sum(changes_ad.values()), "entra": sum(changes_entra.values())},
        "successes": {"disable-account": sum(len(v) for (u, a), v in successes.items() if a == "disable-account"),
                      "suspend-user": sum(len(v) for (u, a), v in successes.items() if a == "suspend-user")},
        "finalStart": {"interruptedFound": interrupted, "firstPass": first},
        "failures": failures,
        "notes": notes,
    }
    with open(os.path.join(args.work, "check.json"), "w") as f:
        json.dump(result, f, indent=1)
    say(f"history: {len(history)} records; " + ", ".join(f"{a} {o} {n}" for (a, o), n in sorted(outcomes.items())))
    say(f"changes made: {result['changesMade']['ad']} AD disables needed (initial + re-enabled), "
        f"{result['changesMade']['entra']} Entra suspends; successful records: {result['successes']}")
    say(f"interrupted actions settled by recovery: {dict(recovery)}")
    say(f"start after SIGTERM: interrupted actions found: {interrupted}; first pass {first}")
    for note in notes[:10]:
        say(f"note: {note}")
    if failures:
        print(f"\n  {len(failures)} FAILURE(S):", file=sys.stderr)
        for line in failures[:40]:
            print(f"    {line}", file=sys.stderr)
    return result


def parse_time(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# graph-outage


class Outage:
    """Keeps graph-sim's fault queue ahead of remedy's requests (faults are counted per request, not
    timed), then drains what is left with requests of its own when the outage ends."""

    def __init__(self, graph, kind, retry_after, buffer=600, chunk=20):
        self.graph, self.kind, self.retry_after = graph, kind, retry_after
        self.buffer, self.chunk = buffer, chunk
        self.injected = 0
        self.turn = 0

    def faulted(self, log):
        drain = user_id("drain")
        return sum(1 for e in log if e["status"] in (429, 503) and "/token" not in e["path"] and drain not in e["path"])

    def top_up(self):
        consumed = self.faulted(self.graph.log())
        while self.injected - consumed < self.buffer:
            kind = self.kind if self.kind != "mixed" else ("429" if self.turn % 2 == 0 else "503")
            self.turn += 1
            if kind == "429":
                self.graph.inject({"throttle": {"count": self.chunk, "retryAfter": self.retry_after}})
            else:
                self.graph.inject({"status": {"status": 503, "count": self.chunk}})
            self.injected += self.chunk
        return consumed

    def drain(self):
        """Our own requests (a $batch of GETs of the drain user) until one is answered 200."""
        drained = 0
        for _ in range(10000):
            requests = [{"id": str(i), "method": "GET", "url": f"/users/{user_id('drain')}"} for i in range(20)]
            status, body = self.graph.call("POST", "/$batch", {"requests": requests})
            if status != 200:
                drained += 1
                continue
            answers = [r["status"] for r in body["responses"]]
            drained += sum(1 for s in answers if s in (429, 503))
            if all(s == 200 for s in answers):
                return drained
        raise Failure("the fault queue did not drain")


def first_pass_end(daemon, began):
    """Seconds from `began` (unix time) to the first "reconciled" log line, if any."""
    from datetime import datetime
    for line in daemon.log().splitlines():
        if " reconciled " in line:
            stamp = line.split()[0]
            return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")[:26] + "+00:00").timestamp() - began, 1)
    return None


def cmd_outage(args):
    users = read_lines(os.path.join(args.work, "users.txt"))
    entra = read_lines(os.path.join(args.work, "entra.txt"))
    graph = Graph(args.sim)
    daemon = Daemon(args.work, args.remedy)
    failures, notes, samples = [], [], []
    result = {"users": len(users), "entraUsers": len(entra), "seconds": args.seconds, "fault": args.fault,
              "failures": failures, "notes": notes}
    out = os.path.join(args.work, "outage.json")
    staging, watched = os.path.join(args.work, "staging"), os.path.join(args.work, "manifests")
    try:
        daemon.start()
        wait_ready_api(daemon)
        graph.get_token()
        outage = Outage(graph, args.fault, args.retry_after)
        outage.top_up()
        t0 = time.monotonic()
        began = time.time()
        say(f"outage begins: every Graph request answers {args.fault} "
            f"({'429 with Retry-After ' + args.retry_after if args.fault != '503' else ''}"
            f"{' and ' if args.fault == 'mixed' else ''}{'503' if args.fault != '429' else ''}) for {args.seconds} s")
        # The batch arrives during the outage: one rename, as one commit's worth.
        os.rename(staging, os.path.join(watched, "incident"))
        seen = collections.Counter()
        ad_first_at = ad_done_at = None
        grace = 10.0  # the debounce and the start of the first pass
        dishonest = collections.Counter()
        while time.monotonic() - t0 < args.seconds:
            consumed = outage.top_up()
            if not daemon.alive():
                raise Failure(f"remedy serve exited during the outage:\n{tail(daemon.log())}")
            try:
                current = statuses(args.remedy)
            except RuntimeError as error:
                current = {}
                notes.append(f"remedy status failed during the outage: {error}")
            names = [f"rel-{u}" for u in entra]
            late = time.monotonic() - t0 > grace
            for name in names:
                s = current.get(name)
                if s is None:
                    seen["no status"] += 1
                    if late:
                        dishonest["no status at all (remedy status does not list the manifest)"] += 1
                    continue
                ready, reconciling = condition(s, "Ready"), condition(s, "Reconciling")
                key = f"Ready={ready.get('status')} Reconciling={reconciling.get('status')}/{reconciling.get('reason')}"
                seen[key] += 1
                if late and not (reconciling.get("status") == "True"
                                 and reconciling.get("reason") in ("ProviderUnavailable", "Failed")):
                    dishonest[key] += 1
                if ready.get("status") == "True":
                    failures.append(f"{time.monotonic() - t0:.1f} s into the outage: {name} is Ready "
                                    f"({ready.get('reason')}: {ready.get('message')}) though Graph answers only errors")
            state = graph.state()
            suspended = [u for u in entra if not state[u.lower()]["accountEnabled"]]
            if suspended:
                failures.append(f"{time.monotonic() - t0:.1f} s into the outage: graph-sim shows {len(suspended)} users "
                                f"suspended ({suspended[:5]}): a request got through the outage (a harness leak)")
            dc = dc_users(args.ldap_ou)
            if ad_first_at is None and any(dc.get(u.lower()) for u in users):
                ad_first_at = time.monotonic() - t0
            if ad_done_at is None and all(dc.get(u.lower()) for u in users):
                ad_done_at = time.monotonic() - t0
            samples.append({"t": round(time.monotonic() - t0, 1), "faulted": consumed})
            time.sleep(0.5)
        # During the outage: no suspend recorded as succeeded (none happened: graph-sim shows no suspension).
        history = remedy_json(args.remedy, "history")
        during = [r for r in action_records(history) if r["event"]["action"] == "suspend-user"]
        wrongly = [r for r in during if r["event"]["outcome"] in SUCCESS]
        for r in wrongly:
            failures.append(f"record {r['id']}: suspend-user {r['event']['outcome']} on {identity_sam(r['event'])} "
                            f"during the outage, but graph-sim shows the user enabled")
        result["duringOutage"] = {
            "statusSamples": dict(seen),
            "suspendRecords": dict(collections.Counter(r["event"]["outcome"] for r in during)),
            "adDisabledFirstAfter": ad_first_at,
            "adDisabledAllAfter": ad_done_at,
            "notSayingSo": dict(dishonest),
            "firstPassEndedAfter": first_pass_end(daemon, began),
            "faultedRequests": outage.faulted(graph.log()),
            "readyz": http("GET", f"{os.environ['REMEDY_SERVER']}/readyz")[1],
        }
        messages = sorted({condition(s, 'Reconciling').get('message', '')[:200] for s in current.values()})
        result["duringOutage"]["statusMessages"] = messages[:5]
        if dishonest:
            failures.append(f"during the outage, {grace:.0f} s and more after the batch arrived, manifests whose status "
                            f"did not say Reconciling/ProviderUnavailable or Failed (samples, every 0.5 s per manifest): "
                            f"{dict(dishonest)}")
        say(f"during the outage: statuses seen {dict(seen)}")
        say(f"  e.g. {messages[0] if messages else '-'}")
        say(f"  suspend-user records so far: {result['duringOutage']['suspendRecords'] or 'none'}; "
            f"AD: first disable seen {'after %.1f s' % ad_first_at if ad_first_at is not None else 'NOT yet'}, all "
            f"{len(users)} {'after %.1f s' % ad_done_at if ad_done_at is not None else 'NOT yet'}; "
            f"the first pass {'ended after %.1f s' % p if (p := result['duringOutage']['firstPassEndedAfter']) is not None else 'still running'}; "
            f"/readyz {result['duringOutage']['readyz']}")
        drained = outage.drain()
        ended = time.monotonic() - t0
        log = graph.log()
        faulted_total = outage.faulted(log)
        say(f"outage ends after {ended:.1f} s: {faulted_total} Graph requests were answered with faults "
            f"({drained} left in the queue drained by the check's own requests)")
        result["outage"] = {"endedAfter": round(ended, 1), "faultedRequests": faulted_total, "drained": drained}
        # After: every user converges, with exactly one success record each, and no duplicates.
        deadline = time.monotonic() + args.recover_timeout
        while True:
            state = graph.state()
            left = [u for u in entra if state[u.lower()]["accountEnabled"]]
            if not left:
                break
            if time.monotonic() > deadline:
                raise Failure(f"{len(left)} users not suspended {args.recover_timeout} s after the outage "
                              f"(e.g. {left[:5]}); statuses: "
                              f"{[condition(s, 'Reconciling').get('message') for s in list(statuses(args.remedy).values())[:2]]}")
            time.sleep(0.2)
        converged_after = time.monotonic() - t0 - ended
        dc = dc_users(args.ldap_ou)
        enabled = [u for u in users if not dc.get(u.lower())]
        if enabled:
            failures.append(f"{len(enabled)} AD accounts still enabled once Entra ID converged: {enabled[:5]}")
        say(f"every Entra user suspended {converged_after:.1f} s after the outage ended")
        # Statuses Ready (a pass settles them after the last change).
        deadline = time.monotonic() + 60
        while True:
            current = statuses(args.remedy)
            not_ready = [n for n in (f"rel-{u}" for u in users) if condition(current.get(n, {}), "Ready").get("status") != "True"]
            if not not_ready:
                break
            if time.monotonic() > deadline:
                failures.append(f"{len(not_ready)} manifests not Ready 60 s after convergence, e.g. "
                                f"{[(n, condition(current.get(n, {}), 'Ready')) for n in not_ready[:3]]}")
                break
            time.sleep(0.2)
        ready_after = time.monotonic() - t0 - ended
        result["after"] = {"suspendedAfter": round(converged_after, 1), "readyAfter": round(ready_after, 1)}
        history = remedy_json(args.remedy, "history")
        with open(os.path.join(args.work, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        if not verify_history(args.remedy):
            failures.append("remedy history verify failed")
        actions = action_records(history)
        outcomes = collections.Counter((r["event"]["action"], r["event"]["outcome"]) for r in actions)
        per = collections.defaultdict(list)
        for r in actions:
            if r["event"]["outcome"] in SUCCESS:
                per[(identity_sam(r["event"]), r["event"]["action"])].append(r["id"])
        for u in users:
            if len(per[(u.lower(), "disable-account")]) != 1:
                failures.append(f"{u}: {len(per[(u.lower(), 'disable-account')])} successful disable-account records, expected 1")
        for u in entra:
            if len(per[(u.lower(), "suspend-user")]) != 1:
                failures.append(f"{u}: {len(per[(u.lower(), 'suspend-user')])} successful suspend-user records, expected 1")
        extra = [k for k in per if k[1] not in ("disable-account", "suspend-user") or
                 (k[1] == "suspend-user" and k[0] not in {u.lower() for u in entra})]
        for k in extra:
            failures.append(f"unexpected successful records {k}: {per[k]}")
        # Every successful suspend is a PATCH graph-sim answered 204/200, after the outage.
        patches = [e for e in log if e["method"] == "PATCH" and e["status"] in (200, 204)]
        state = graph.state()
        touched = [u for u in users if u not in entra and not state[u.lower()]["accountEnabled"]]
        if touched:
            failures.append(f"users suspended that no manifest asks to suspend: {touched[:10]}")
        suspends = sum(1 for r in actions if r["event"]["action"] == "suspend-user" and r["event"]["outcome"] in SUCCESS)
        if patches and len(patches) < suspends:
            failures.append(f"{suspends} successful suspend records, but graph-sim answered only {len(patches)} PATCHes")
        failed_records = [r for r in actions if r["event"]["outcome"] == "failed"]
        result["history"] = {"records": len(history),
                             "actionOutcomes": {f"{a} {o}": n for (a, o), n in sorted(outcomes.items())},
                             "successfulPatches": len(patches),
                             "failedErrors": sorted({(r["event"].get("error") or "")[:160] for r in failed_records})[:5]}
        say(f"history: {len(history)} records; " + ", ".join(f"{a} {o} {n}" for (a, o), n in sorted(outcomes.items())))
        for e in result["history"]["failedErrors"]:
            say(f"  failed record error, e.g.: {e}")
        if args.drift_phase:
            drift_outage(args, daemon, graph, entra, result, failures)
        code = daemon.terminate()
        if code != 0:
            failures.append(f"remedy serve exited {code} on SIGTERM")
        if "panicked" in daemon.log():
            failures.append("remedy panicked")
        result["passes"] = daemon.passes()
    except Failure as failure:
        failures.append(str(failure))
    finally:
        result["samples"] = samples
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.work, "check.json"), "w") as f:
            json.dump({"failures": failures, "notes": notes}, f, indent=1)
    if failures:
        print(f"\n  {len(failures)} FAILURE(S):", file=sys.stderr)
        for line in failures[:40]:
            print(f"    {line}", file=sys.stderr)
        return 1
    return 0


def drift_outage(args, daemon, graph, entra, result, failures):
    """Phase 2: the manifests are Ready; a quarter of the users are re-enabled in Entra ID (drift),
    then Graph goes down again and a reconcile is asked for. Their status must not go on saying
    Ready while remedy cannot see or correct them; afterwards each gets exactly one correction."""
    rng = random.Random()
    drifted = sorted(rng.sample(entra, max(1, len(entra) // 4)))
    last_id = max((r["id"] for r in remedy_json(args.remedy, "history")), default=0)
    graph.re_enable(drifted)
    outage = Outage(graph, args.fault, args.retry_after)
    outage.top_up()
    t0 = time.monotonic()
    say(f"phase 2: {len(drifted)} users re-enabled in Entra ID (drift), then Graph down again for {args.seconds} s "
        f"and a reconcile requested")
    request_reconcile()
    seen, stale = collections.Counter(), collections.Counter()
    while time.monotonic() - t0 < args.seconds:
        outage.top_up()
        current = statuses(args.remedy)
        for u in drifted:
            s = current.get(f"rel-{u}", {})
            ready, reconciling = condition(s, "Ready"), condition(s, "Reconciling")
            key = f"Ready={ready.get('status')} Reconciling={reconciling.get('status')}/{reconciling.get('reason')}"
            seen[key] += 1
            if time.monotonic() - t0 > 10 and ready.get("status") == "True":
                stale[key] += 1
        time.sleep(0.5)
    state = graph.state()
    leaked = [u for u in drifted if not state[u.lower()]["accountEnabled"]]
    history = remedy_json(args.remedy, "history")
    corrected = [r for r in action_records(history) if r["id"] > last_id and r["event"]["action"] == "suspend-user"
                 and r["event"]["outcome"] in SUCCESS and identity_sam(r["event"]) in {u.lower() for u in drifted}]
    readyz = http("GET", f"{os.environ['REMEDY_SERVER']}/readyz")[1]
    drained = outage.drain()
    ended = time.monotonic() - t0
    say(f"  statuses of the drifted users during it: {dict(seen)}; /readyz {readyz}")
    if stale:
        failures.append(f"phase 2: with Graph down and {len(drifted)} users re-enabled in Entra ID, their manifests "
                        f"still said Ready 10 s and more into the outage (samples every 0.5 s): {dict(stale)}")
    if leaked or corrected:
        failures.append(f"phase 2: during the outage {len(leaked)} drifted users were suspended, "
                        f"{len(corrected)} corrections recorded")
    deadline = time.monotonic() + args.recover_timeout
    while any(graph.state()[u.lower()]["accountEnabled"] for u in drifted):
        if time.monotonic() > deadline:
            failures.append(f"phase 2: drift not corrected {args.recover_timeout} s after the outage")
            break
        time.sleep(0.2)
    corrected_after = time.monotonic() - t0 - ended
    history = remedy_json(args.remedy, "history")
    per = collections.Counter(identity_sam(r["event"]) for r in action_records(history)
                              if r["event"]["action"] == "suspend-user" and r["event"]["outcome"] in SUCCESS)
    wrong = {u: per[u.lower()] for u in entra if per[u.lower()] != (2 if u in drifted else 1)}
    if wrong:
        failures.append(f"phase 2: successful suspend-user records per user not 1 (+1 if drifted): {dict(list(wrong.items())[:10])}")
    with open(os.path.join(args.work, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    if not verify_history(args.remedy):
        failures.append("phase 2: remedy history verify failed")
    result["phase2"] = {"drifted": len(drifted), "statusSamples": dict(seen), "staleReady": dict(stale),
                        "readyz": readyz, "outageEndedAfter": round(ended, 1), "drained": drained,
                        "correctedAfter": round(corrected_after, 1)}
    say(f"  outage ended after {ended:.1f} s; drift corrected {corrected_after:.1f} s later")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--work", required=True)
    s.add_argument("--users", required=True)
    s.add_argument("--entra-every", type=int, default=4)
    s.add_argument("--manifests")
    c = sub.add_parser("crashloop")
    c.add_argument("--work", required=True)
    c.add_argument("--remedy", required=True)
    c.add_argument("--rounds", type=int, required=True)
    c.add_argument("--ldap-ou", required=True)
    c.add_argument("--sim", required=True)
    c.add_argument("--seed", type=int)
    o = sub.add_parser("outage")
    o.add_argument("--work", required=True)
    o.add_argument("--remedy", required=True)
    o.add_argument("--seconds", type=float, required=True)
    o.add_argument("--ldap-ou", required=True)
    o.add_argument("--sim", required=True)
    o.add_argument("--fault", choices=["429", "503", "mixed"], default="mixed")
    o.add_argument("--retry-after", default="2s")
    o.add_argument("--recover-timeout", type=float, default=300)
    o.add_argument("--drift-phase", action="store_true")
    args = parser.parse_args()
    return {"seed": cmd_seed, "crashloop": cmd_crashloop, "outage": cmd_outage}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
