#!/usr/bin/env python3
"""The helper of `scripts/reliability crashloop` and `scripts/reliability graph-outage`.

    faults.py seed       --work DIR --users FILE --entra-every K     graph-sim seed and the manifests
    faults.py crashloop  --work DIR --remedy BIN --rounds R --ldap-ou DN --sim URL [--seed S]
    faults.py outage     --work DIR --remedy BIN --seconds S --ldap-ou DN --sim URL [--fault KIND]
    faults.py dc-outage  --work DIR --remedy BIN --seconds S --ldap-ou DN --samba-dc SCRIPT

Shared layout of DIR (made by scripts/reliability):
    users.txt           the sAMAccountNames, one a line (UPN: <sam>@remedy.test)
    entra.txt           the subset whose manifests also suspend the user in Entra ID
    graph-seed.yaml     graph-sim's seed: every user, cloud-only and enabled
    manifests/          what remedy serve watches (a plain directory)
    remedy.yaml         remedy's configuration; operator.token the API token
    remedy.pid          the pid of the running `remedy serve` (the shell's trap stops it)
    run-NN.log          one log per start of remedy serve (--log-format json: remedy_lab.Log)
Everything the checks find goes to DIR/check.json (and rounds.json / outage.json), the history to
DIR/history.json; the shell copies them to target/reliability/<check>/.
"""

import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remedy_lab import (  # noqa: E402
    CLIENT_ID, INTERRUPTED, PASS, SETTLED, TENANT, CommandFailed, Daemon, Failure, Log, Ou, action_records, condition,
    disabled_accounts, event_time, http, identity_sam, read_lines, readyz, remedy_json, report_findings,
    request_reconcile, say, statuses, verify_history,
)

SECRET = "reliability-secret-not-a-real-one"
SUCCESS = ("succeeded", "drift-corrected")


# ---------------------------------------------------------------------------------------------
# setup


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
# crashloop


def converged(ou, users, entra, graph):
    """(AD accounts not disabled, Entra subset users not suspended, others touched in Entra)."""
    dc = disabled_accounts(ou)
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
        daemon.check_alive()
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
                Ou(args.ldap_ou).re_enable(sorted(pending_ad))
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
                                  f"{daemon.log.tail()}")
                dc = disabled_accounts(args.ldap_ou)
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
            daemon.wait_http("/healthz", 30, poll=0.05)
            info["interruptedIntents"] = daemon.log.interrupted_intents()
            if info["interruptedIntents"] and rng.random() < 0.25:
                # A second SIGKILL during the restart's first pass: the one that settles the interrupted
                # actions and sends again what they did not do.
                daemon.wait_event(SETTLED, 30)
                time.sleep(rng.uniform(0.0, 1.5))
                daemon.kill_9()
                settled_before = len(daemon.log.find(SETTLED))
                daemon.start()
                daemon.wait_http("/healthz", 30, poll=0.05)
                info["killedDuringRecovery"] = {"settledBefore": settled_before,
                                                "interruptedIntents": daemon.log.interrupted_intents()}
            converged_in, quiet_in = wait_quiet(daemon, args.ldap_ou, users, entra, graph, timeout=180)
            info["settled"] = len(daemon.log.find(SETTLED)) + \
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


def checked_history(args, failures):
    """The whole history, kept in DIR/history.json and verified (`remedy history verify`; a failure
    is added to `failures`); returns it, its action records and their (action, outcome) counts."""
    history = remedy_json(args.remedy, "history")
    with open(os.path.join(args.work, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    if not verify_history(args.remedy):
        failures.append("remedy history verify failed")
    actions = action_records(history)
    outcomes = collections.Counter((r["event"]["action"], r["event"]["outcome"]) for r in actions)
    return history, actions, outcomes


def restart_finds_nothing_to_do(args, daemon, failures, idle):
    """The end of a check: SIGTERM (exit 0), a start on the same store whose first pass finds no
    interrupted action and whose `idle` counters (of the pass's log line) are 0, a final SIGTERM,
    and no panic in any run's log. Returns whether that start found interrupted actions, and its
    first pass."""
    code = daemon.terminate(30)
    if code != 0:
        failures.append(f"remedy serve exited {code} on SIGTERM")
    daemon.start()
    daemon.wait_http("/healthz", 30, poll=0.05)
    _, first = daemon.wait_pass(1, 120, poll=0.05)
    found = daemon.log.find(INTERRUPTED)
    interrupted = bool(found)
    if interrupted:
        failures.append(f"after the SIGTERM, the next start found interrupted actions: {json.dumps(found[0]['fields'])}")
    if any(first.get(counter) != 0 for counter in idle):
        failures.append(f"the start after the SIGTERM still had work: {first}")
    code = daemon.terminate(30)
    if code != 0:
        failures.append(f"remedy serve exited {code} on the final SIGTERM")
    for path in sorted(os.listdir(args.work)):
        if path.startswith("run-") and Log(os.path.join(args.work, path)).panics():
            failures.append(f"{path}: remedy panicked")
    return interrupted, first


def finish(args, daemon, users, entra, changes_ad, changes_entra, re_enabled_at, rounds):
    """The end of a crashloop: the history against the changes made, the chain, a clean stop and
    a start that finds nothing interrupted."""
    failures, notes = [], []
    history, actions, outcomes = checked_history(args, failures)
    successes = collections.defaultdict(list)  # (user, action) -> [(at, outcome, error)]
    for record in actions:
        event = record["event"]
        if event["outcome"] in SUCCESS:
            successes[(identity_sam(event), event["action"])].append((record["at"], event["outcome"], event.get("error")))
        elif event["outcome"] == "not-applied":
            # A crash is not a failure: an interrupted change the directory does not show is
            # settled as not applied, without an error.
            if "interrupted by a restart" not in (event.get("note") or "") or event.get("error"):
                failures.append(f"record {record['id']}: not-applied {event['action']} on {identity_sam(event)} "
                                f"without the interruption in its note, or with an error: {json.dumps(event)}")
        elif event["outcome"] == "failed" and "interrupted by a restart" in (event.get("error") or ""):
            failures.append(f"record {record['id']}: a crash recorded as a failure: {event['action']} on "
                            f"{identity_sam(event)}: {event.get('error')}")
        elif event["outcome"] == "failed":
            notes.append(f"record {record['id']}: {event['action']} failed on {identity_sam(event)}: {event.get('error')}")
        else:
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
    interrupted, first = restart_finds_nothing_to_do(args, daemon, failures, ("sent", "recovered"))
    recovery = collections.Counter()
    for record in actions:
        error = record["event"].get("error") or ""
        if "confirmed when read again" in error:
            recovery["confirmed applied"] += 1
        elif record["event"]["outcome"] == "not-applied":
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
    report_findings(failures, notes)
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
    """Seconds from `began` (unix time) to the first pass logged, if any."""
    passes = daemon.log.find(PASS)
    return round(event_time(passes[0]) - began, 1) if passes else None


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
        daemon.wait_http("/healthz", 30, poll=0.05)
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
                raise Failure(f"remedy serve exited during the outage:\n{daemon.log.tail()}")
            try:
                current = statuses(args.remedy)
            except CommandFailed as error:
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
            dc = disabled_accounts(args.ldap_ou)
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
            "readyz": readyz(timeout=10)[1],
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
        dc = disabled_accounts(args.ldap_ou)
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
        history, actions, outcomes = checked_history(args, failures)
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
        code = daemon.terminate(30)
        if code != 0:
            failures.append(f"remedy serve exited {code} on SIGTERM")
        if daemon.log.panics():
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
    return report_findings(failures)


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
    readyz_body = readyz(timeout=10)[1]
    drained = outage.drain()
    ended = time.monotonic() - t0
    say(f"  statuses of the drifted users during it: {dict(seen)}; /readyz {readyz_body}")
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
                        "readyz": readyz_body, "outageEndedAfter": round(ended, 1), "drained": drained,
                        "correctedAfter": round(corrected_after, 1)}
    say(f"  outage ended after {ended:.1f} s; drift corrected {corrected_after:.1f} s later")


# ---------------------------------------------------------------------------------------------
# dc-outage

# The configuration scripts/reliability generates for dc-outage (activeDirectory.connectTimeout and
# operationTimeout), and remedy's fixed first retry delay (controller::policy::Backoff: base 2 s,
# doubling, capped at 300 s, times a jitter factor in [0.5, 1]).
DC_CONNECT_TIMEOUT = 2.0
DC_OPERATION_TIMEOUT = 5.0
RETRY_BASE, RETRY_CAP = 2.0, 300.0
POOL_BACKOFF_MAX = 5.0  # ad/pool.rs: reconnects after failures are spaced up to 5 s


def status_bound():
    """Seconds after the DC went down by which every manifest that is not Ready must say
    Reconciling / ProviderUnavailable or Failed, and /readyz name active-directory.

    The pass in flight when the DC dies ends once its last operation fails: an operation sent
    before the DC died and never answered gives up after operationTimeout (5 s); a connection
    opened after it fails at once (connection refused on loopback) or after connectTimeout (2 s),
    and the pool then fails further leases at once. That pass writes the statuses (Failed, with
    the DC's error, for writes sent and not confirmed). /readyz names the provider after a pass
    that could not observe it: the first retry comes at most the first backoff (2 s) later and
    fails within connectTimeout. 5 + 2 + 2 + 2 = 11 s, plus 1 s for writing the statuses of a
    pass and the sampling interval: 12 s."""
    return DC_OPERATION_TIMEOUT + DC_CONNECT_TIMEOUT + RETRY_BASE + DC_CONNECT_TIMEOUT + 1.0


def converge_bound(down_for):
    """Seconds after the DC is back by which every account must be disabled and every manifest
    Ready. Retries back off per account (2 s doubling, jitter 0.5-1, capped at 300 s): the retry
    due when the DC returns was scheduled at most `down_for` s after the first failure, with a
    delay of at most 2^k where the k-1 earlier delays add up to at least (2^k - 2) / 2: so at most
    2 * down_for + 2 s (and 300 s). Then the pool's reconnect spacing (5 s) if that retry is
    refused once more, and 20 s for a pass of the whole batch and its statuses."""
    return min(RETRY_CAP, 2 * down_for + RETRY_BASE) + POOL_BACKOFF_MAX + 20.0


def samba_dc(script, command, marker):
    """scripts/samba-dc stop dc1|start; `marker` exists while this check has the DC stopped (the
    shell's trap starts the DC again if it finds it). Only dc1 is stopped: it is the DC remedy is
    configured with here, and stopping dc2 first would delay dc1's stop by two seconds, long enough
    for the whole batch to land before the DC dies."""
    if command == "stop":
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    started = time.monotonic()
    args = [script, "stop", "dc1"] if command == "stop" else [script, command]
    result = subprocess.run(args, text=True, capture_output=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise Failure(f"scripts/samba-dc {command} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    if command == "start" and os.path.exists(marker):
        os.remove(marker)
    return took


def dc_error(message):
    """Whether a status message carries the DC's error (what remedy got from the LDAP client)."""
    url = os.environ["REMEDY_TEST_LDAPS_URL"]
    return url in message or "timed out" in message or "LDAP" in message


def write_dc_manifests(work, users):
    staging = os.path.join(work, "staging")
    os.makedirs(staging, exist_ok=True)
    os.makedirs(os.path.join(work, "manifests"), exist_ok=True)
    spec = "  activeDirectory:\n    disabled: true\n"
    for i, sam in enumerate(users):
        name = f"rel-{sam}"
        text = (f"apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n"
                f"  reason: \"REL-{i}: reliability check, DC outage\"\n  target:\n    samAccountName: {sam}\n{spec}")
        with open(os.path.join(staging, f"{name}.yaml"), "w") as f:
            f.write(text)


def cmd_dc_outage(args):
    users = read_lines(os.path.join(args.work, "users.txt"))
    names = {f"rel-{u}": u.lower() for u in users}
    n = len(users)
    daemon = Daemon(args.work, args.remedy)
    marker = os.path.join(args.work, "dc-stopped")
    failures, notes, samples = [], [], []
    result = {"users": n, "seconds": args.seconds, "stopAt": args.stop_at,
              "statusBound": status_bound(), "failures": failures, "notes": notes}
    out = os.path.join(args.work, "dcoutage.json")
    write_dc_manifests(args.work, users)
    dc_is_down = False
    try:
        daemon.start()
        daemon.wait_http("/healthz", 30, poll=0.05)
        time.sleep(1.0)  # the start's first pass (nothing to do) before the batch
        # The batch arrives: one rename.
        t_batch = time.monotonic()
        os.rename(os.path.join(args.work, "staging"), os.path.join(args.work, "manifests", "incident"))
        target = max(1, int(n * args.stop_at))
        say(f"the batch arrived ({n} manifests, one rename); the DC is stopped once {target} of the {n} disables "
            f"show in it (ldapsearch as the administrator)")
        polls = []
        while True:
            if not daemon.alive():
                raise Failure(f"remedy serve exited before the stop ({daemon.process.returncode}):\n{daemon.log.tail()}")
            snap = disabled_accounts(args.ldap_ou, timeout=3)
            if snap is None:
                raise Failure("the DC did not answer before the stop (someone else stopped it?)")
            done = sum(1 for u in users if snap.get(u.lower()))
            polls.append((round(time.monotonic() - t_batch, 2), done))
            if done >= target:
                break
            if time.monotonic() - t_batch > 120:
                raise Failure(f"only {done} of {n} disables showed within 120 s of the batch; remedy's log:\n{daemon.log.tail()}")
        t_trigger = time.monotonic()
        # Stop the DC; meanwhile read it as fast as it answers, so that "last seen" is as late as can be.
        stop_result = {}

        def stop():
            try:
                stop_result["took"] = samba_dc(args.samba_dc, "stop", marker)
            except Failure as error:
                stop_result["error"] = str(error)

        import threading
        dc_is_down = True
        stopper = threading.Thread(target=stop)
        stopper.start()
        last_seen, last_seen_at = snap, t_trigger
        while stopper.is_alive():
            s = disabled_accounts(args.ldap_ou, timeout=1)
            if s is None or len(s) < n:
                break
            last_seen, last_seen_at = s, time.monotonic()
        seen_done = sum(1 for u in users if last_seen.get(u.lower()))
        say(f"{done}/{n} disabled {t_trigger - t_batch:.2f} s after the batch: scripts/samba-dc stop; the DC stopped "
            f"answering {time.monotonic() - t_trigger:.2f} s later; last seen with {seen_done}/{n} disabled")

        # The outage: every 0.5 s, remedy's status and /readyz. Times are from the stop command; the
        # S seconds and the bound from when scripts/samba-dc stop returned (samba gone).
        bound = status_bound()
        seen = collections.Counter()
        late_wrong = collections.Counter()
        ready_claims = {}  # name -> first t it said Ready while not disabled as last seen
        first_pu = all_honest_at = readyz_down_at = None
        readyz_late_ready = 0
        messages = collections.Counter()
        t_down = None
        while True:
            now = time.monotonic()
            if t_down is None and not stopper.is_alive():
                stopper.join()
                if "error" in stop_result:
                    raise Failure(stop_result["error"])
                t_down = now
                result["stop"] = {"batchToTrigger": round(t_trigger - t_batch, 2), "disabledAtTrigger": done,
                                  "stopTook": round(stop_result["took"], 2), "disabledLastSeen": seen_done,
                                  "lastSeenAfterStop": round(last_seen_at - t_trigger, 2), "polls": polls}
                say(f"scripts/samba-dc stop returned after {stop_result['took']:.1f} s: the DC stays down {args.seconds:.0f} s")
            if t_down is not None and now - t_down >= args.seconds:
                break
            t = now - t_trigger
            late = t_down is not None and now - t_down > bound
            if not daemon.alive():
                raise Failure(f"remedy serve exited during the outage ({daemon.process.returncode}):\n{daemon.log.tail()}")
            try:
                current = statuses(args.remedy)
            except CommandFailed as error:
                notes.append(f"{t:.1f} s: remedy status failed: {error}")
                time.sleep(0.5)
                continue
            code, body = readyz()
            ready_ok = code == 200
            names_down = isinstance(body, dict) and "active-directory" in json.dumps(body.get("unavailableProviders", body))
            if not ready_ok and names_down and readyz_down_at is None:
                readyz_down_at = t
            if late and (ready_ok or not names_down):
                readyz_late_ready += 1
            sample = collections.Counter()
            honest = True
            for name, sam in names.items():
                s = current.get(name)
                ready, rec = condition(s or {}, "Ready"), condition(s or {}, "Reconciling")
                if s is None:
                    key = "no status"
                elif ready.get("status") == "True":
                    key = f"Ready/{ready.get('reason')}"
                else:
                    key = f"Ready={ready.get('status')} Reconciling={rec.get('status')}/{rec.get('reason')}"
                sample[key] += 1
                if ready.get("status") == "True":
                    if not last_seen.get(sam) and name not in ready_claims:
                        ready_claims[name] = round(t, 1)
                    continue
                ok = rec.get("status") == "True" and rec.get("reason") in ("ProviderUnavailable", "Failed") \
                    and dc_error(rec.get("message", ""))
                if rec.get("reason") == "ProviderUnavailable" and first_pu is None:
                    first_pu = t
                if rec.get("message"):
                    messages[re.sub(r"rl-[0-9a-f]+-\d+", "<user>", re.sub(r"retrying at \S+", "retrying at <t>",
                                                                         rec["message"]))[:240]] += 1
                if not ok:
                    honest = False
                    if late:
                        late_wrong[key + ("" if dc_error(rec.get("message", "")) or rec.get("status") != "True"
                                          else " (no DC error in the message)")] += 1
            if honest and all_honest_at is None:
                all_honest_at = t
            elif not honest:
                all_honest_at = None
            seen.update(sample)
            samples.append({"t": round(t, 1), "down": t_down is not None, "readyz": code, "statuses": dict(sample)})
            time.sleep(0.5)
        history_down = remedy_json(args.remedy, "history")
        code, body = readyz()
        result["duringOutage"] = {
            "statusSamples": dict(seen), "firstProviderUnavailableAfter": first_pu and round(first_pu, 1),
            "allHonestFrom": all_honest_at and round(all_honest_at, 1),
            "readyzNotReadyFrom": readyz_down_at and round(readyz_down_at, 1),
            "readyzAtEnd": [code, body], "lateDishonest": dict(late_wrong),
            "readyzReadyAfterBound": readyz_late_ready, "readyWhileNotDisabledAsLastSeen": ready_claims,
            "messages": messages.most_common(6),
        }
        say(f"during the outage ({args.seconds:.0f} s, a sample every 0.5 s): {dict(seen)}")
        for text, count in messages.most_common(3):
            say(f"  {count:6d} x {text}")
        stop_took = stop_result["took"]
        say(f"  after the stop command: first ProviderUnavailable {first_pu if first_pu is None else round(first_pu, 1)} s; "
            f"every manifest not Ready saying so with the DC's error from "
            f"{all_honest_at if all_honest_at is None else round(all_honest_at, 1)} s (bound: {bound:.0f} s after "
            f"samba-dc stop returned, {stop_took + bound:.0f} s here); /readyz not ready naming active-directory from "
            f"{readyz_down_at if readyz_down_at is None else round(readyz_down_at, 1)} s: {code} {json.dumps(body)[:200]}")
        if late_wrong:
            failures.append(f"more than {bound:.0f} s after the DC went down, manifests not Ready whose status did not say "
                            f"Reconciling / ProviderUnavailable or Failed with the DC's error (samples): {dict(late_wrong)}")
        if readyz_down_at is None or readyz_late_ready:
            failures.append(f"/readyz: not ready naming active-directory from "
                            f"{readyz_down_at} s; {readyz_late_ready} samples after {bound:.0f} s said otherwise; at the end: {code} {body}")

        # The DC comes back; what it shows at once is what it had when it died.
        up_took = samba_dc(args.samba_dc, "start", marker)
        dc_is_down = False
        t_up = time.monotonic()
        at_death = None
        for _ in range(50):
            at_death = disabled_accounts(args.ldap_ou, timeout=3)
            if at_death is not None and len(at_death) >= n:
                break
            time.sleep(0.1)
        if at_death is None:
            raise Failure("the DC does not answer after scripts/samba-dc start")
        snap_after = time.monotonic() - t_up
        passes_before = len(daemon.passes())
        landed = {u.lower() for u in users if at_death.get(u.lower())}
        late_landed = sorted(u for u in landed if not last_seen.get(u))
        down_for = t_up - t_trigger
        say(f"DC down {down_for:.1f} s (stop command to start returned); scripts/samba-dc start took {up_took:.1f} s; read {snap_after:.2f} s later: "
            f"{len(landed)}/{n} disabled ({len(late_landed)} more than last seen before the stop)")
        mid_run = 0 < len(landed) < n
        result["restart"] = {"dcDownFor": round(down_for, 1), "startTook": round(up_took, 2),
                             "disabledAtDeath": len(landed), "landedAfterLastSeen": len(late_landed),
                             "midRun": mid_run}
        if not mid_run:
            failures.append(f"the stop did not come mid-run: {len(landed)} of {n} disables had landed when the DC died "
                            f"(stopped once {done} showed): no write was in flight (a smaller --stop-at, or more users)")
        # A Ready claim is a lie only if the DC did not have the account disabled when it died.
        for name, t in sorted(ready_claims.items()):
            if names[name] in landed:
                notes.append(f"{name}: Ready {t} s into the outage; the last read before the stop showed its account "
                             f"enabled, but the write had landed (the DC had it disabled when it died)")
            else:
                failures.append(f"{name}: said Ready {t} s into the outage, but its account was not disabled in the DC")
        # During the outage: no success recorded that the DC does not show.
        down_successes = [r for r in action_records(history_down) if r["event"]["outcome"] in SUCCESS]
        for r in down_successes:
            if r["event"]["action"] == "disable-account" and identity_sam(r["event"]) not in landed:
                failures.append(f"record {r['id']}: {r['event']['action']} {r['event']['outcome']} on "
                                f"{identity_sam(r['event'])} (history read at the end of the outage), but the DC "
                                f"did not have the account disabled when it died")
        recorded_down = {identity_sam(r["event"]) for r in down_successes if r["event"]["action"] == "disable-account"}
        in_flight = sorted(landed - recorded_down)
        result["restart"]["landedWithoutRecord"] = len(in_flight)
        result["restart"]["successRecordsDuringOutage"] = len(down_successes)
        say(f"history at the end of the outage: {len(down_successes)} successes; {len(in_flight)} disables had "
            f"landed without one (sent before the DC died, answer lost: recovery must confirm them, not send them again)")

        # Converge: every account disabled, every manifest Ready.
        limit = converge_bound(down_for)
        disabled_at = ready_at = None
        while True:
            elapsed = time.monotonic() - t_up
            if not daemon.alive():
                raise Failure(f"remedy serve exited after the DC came back ({daemon.process.returncode}):\n{daemon.log.tail()}")
            if disabled_at is None:
                snap = disabled_accounts(args.ldap_ou, timeout=3)
                if snap is not None and all(snap.get(u.lower()) for u in users):
                    disabled_at = elapsed
            if disabled_at is not None:
                current = statuses(args.remedy)
                if all(condition(current.get(name, {}), "Ready").get("status") == "True" for name in names):
                    ready_at = time.monotonic() - t_up
                    break
            if elapsed > limit:
                current = statuses(args.remedy)
                not_ready = [nm for nm in names if condition(current.get(nm, {}), "Ready").get("status") != "True"]
                failures.append(f"not converged {limit:.0f} s after the DC came back (the bound from remedy's backoff): "
                                f"all disabled {'after %.1f s' % disabled_at if disabled_at is not None else 'NO'}; "
                                f"{len(not_ready)} manifests not Ready, e.g. "
                                f"{[(nm, condition(current.get(nm, {}), 'Reconciling').get('message')) for nm in not_ready[:2]]}")
                break
            time.sleep(0.25)
        result["after"] = {"disabledAfter": disabled_at and round(disabled_at, 1),
                           "readyAfter": ready_at and round(ready_at, 1), "bound": round(limit),
                           "passesBeforeFirstRead": passes_before}
        say(f"after the DC came back: every account disabled after {disabled_at if disabled_at is None else round(disabled_at, 1)} s, "
            f"every manifest Ready after {ready_at if ready_at is None else round(ready_at, 1)} s (bound {limit:.0f} s)")

        # The history: exactly one success per account's disable, nothing else succeeded.
        history, actions, outcomes = checked_history(args, failures)
        per = collections.defaultdict(list)
        settled = collections.Counter()
        for r in actions:
            e = r["event"]
            error = e.get("error") or ""
            if "confirmed when read again" in error:
                settled["confirmed applied"] += 1
            elif e["outcome"] == "not-applied":
                settled["not applied (sent again)"] += 1
            if e["outcome"] in SUCCESS:
                per[(identity_sam(e), e["action"])].append(r)
            elif e["outcome"] not in ("failed", "not-applied"):
                failures.append(f"record {r['id']}: unexpected outcome {e['outcome']} of {e['action']} on {identity_sam(e)}")
        wanted = ["disable-account"]
        for u in users:
            for action in wanted:
                got = per.get((u.lower(), action), [])
                if len(got) != 1:
                    failures.append(f"{u}: {len(got)} successful {action} records, expected 1 "
                                    f"({'duplicated' if got else 'lost'}): {[(r['id'], r['event'].get('error')) for r in got]}")
        for key in sorted(per):
            if key[1] not in wanted or key[0] not in {u.lower() for u in users}:
                failures.append(f"unexpected successful records {key}: {[r['id'] for r in per[key]]}")
        # A write that landed before the DC died is settled from what the DC shows, not sent again.
        resent = []
        for u in in_flight:
            got = per.get((u, "disable-account"), [])
            if got and "confirmed when read again" not in (got[0]["event"].get("error") or ""):
                resent.append((u, got[0]["id"], got[0]["event"].get("error")))
        if resent:
            failures.append(f"{len(resent)} disables that had landed before the DC died were recorded as a new send, "
                            f"not settled from what the DC shows: {resent[:5]}")
        unconfirmed = [r for r in actions if "sent and not confirmed" in (r["event"].get("error") or "")]
        # A write that failed before anything was sent (no connection to be had: the DC refused it,
        # or the pool's reconnect backoff answered for it) is recorded as failed, "nothing was sent",
        # and is not journaled as possibly applied. "Sent and not confirmed" is left for writes that
        # were sent (its error may still read "Connection refused": the pool reconnects after a
        # broken connection), and each of those is settled from what the DC shows.
        unsent = [r for r in actions if "nothing was sent" in (r["event"].get("error") or "")]
        settled["failed before sending"] = len(unsent)
        never_sent = [r for r in unconfirmed if "nothing was sent" in (r["event"].get("error") or "")]
        if never_sent:
            failures.append(f"{len(never_sent)} records say both 'sent and not confirmed' and 'nothing was sent', "
                            f"e.g. record {never_sent[0]['id']}: {never_sent[0]['event'].get('error')}")
        result["history"] = {"records": len(history),
                             "actionOutcomes": {f"{a} {o}": nn for (a, o), nn in sorted(outcomes.items())},
                             "settled": dict(settled), "sentNotConfirmed": len(unconfirmed),
                             "failedBeforeSending": len(unsent),
                             "examples": sorted({(r["event"].get("error") or "")[:220] for r in unconfirmed})[:4]}
        say(f"history: {len(history)} records; " + ", ".join(f"{a} {o} {nn}" for (a, o), nn in sorted(outcomes.items())))
        say(f"  settled from what the DC showed: {dict(settled) or 'none'}; {len(unconfirmed)} records of writes "
            f"sent and not confirmed when the DC died")
        for e in result["history"]["examples"][:2]:
            say(f"  e.g. {e}")

        # SIGTERM; a start after it finds nothing interrupted and has nothing to do.
        _, first = restart_finds_nothing_to_do(args, daemon, failures, ("sent", "recovered", "failed"))
        result["finalStart"] = {"firstPass": first}
        say(f"start after SIGTERM: first pass {first}")
    except Failure as failure:
        failures.append(str(failure))
    finally:
        if dc_is_down:
            try:
                samba_dc(args.samba_dc, "start", marker)
            except Failure as error:
                failures.append(str(error))
        result["samples"] = samples
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.work, "check.json"), "w") as f:
            json.dump({"failures": failures, "notes": notes}, f, indent=1)
    return report_findings(failures, notes)


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
    d = sub.add_parser("dc-outage")
    d.add_argument("--work", required=True)
    d.add_argument("--remedy", required=True)
    d.add_argument("--seconds", type=float, required=True)
    d.add_argument("--ldap-ou", required=True)
    d.add_argument("--samba-dc", required=True)
    d.add_argument("--stop-at", type=float, default=0.05)
    args = parser.parse_args()
    return {"seed": cmd_seed, "crashloop": cmd_crashloop, "outage": cmd_outage,
            "dc-outage": cmd_dc_outage}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
