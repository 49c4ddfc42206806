#!/usr/bin/env python3
"""The helper of `scripts/reliability churn`: makes the commits, waits for remedy to settle, checks.

    churn.py generate  --work DIR --commits N --users FILE --seed S      makes the N commits
    churn.py settle    --work DIR --remedy BIN --timeout SECONDS          waits for the final state
    churn.py check     --work DIR --remedy BIN --ldap-ou DN               checks it, prints findings

Everything it knows is kept in DIR/model.json (the final commit's intended state, every manifest
version that was valid or invalid, which commit did what), so each step is a separate process.

The manifest repository (see scripts/reliability):
    DIR/upstream.git  bare, the "remote"
    DIR/author        a clone where commits of "pull" batches are made and pushed
    DIR/watched       the checkout remedy watches: "pull" batches arrive with `git pull` (as
                      git-sync would), "direct" batches are committed in it (an operator's edit).

Users (sAMAccountNames from FILE, one a line) are split into classes:
    never    never named by any manifest, in any commit: must stay enabled and unrecorded
    bait     named only by manifests that never load (a bad field, a YAML syntax error, a valid
             document in a file with a syntax error, a valid document whose name another file
             already uses): must stay enabled and unrecorded
    restore  named by at most one manifest in the whole run, always onRelease: restore: when that
             manifest is gone at the end, the account must be enabled again
    leave    named by at most one manifest, always onRelease: leave: when it is gone at the end,
             the account must be as remedy left it
    shared   named by any number of manifests, at once too, either onRelease
"""

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from remedy_lab import (  # noqa: E402
    CommandFailed, condition, disabled_accounts, identity_sam, remedy_json, report_findings, statuses,
)

# ---------------------------------------------------------------------------------------------
# manifests


def render(name, user, disabled, on_release, rev, flaw=None):
    """A manifest's text; `flaw` makes it invalid in one way (None: valid)."""
    reason = f"CHURN {name} rev {rev}: reliability churn"
    api = "apiVersion: remedy.dev/v1"
    if flaw == "syntax-unnamed":
        # An unterminated quote on the first line: no name can be read from the file.
        api = 'apiVersion: "remedy.dev/v1'
    lines = [api, "kind: Remediation", "metadata:", f"  name: {name}", "spec:"]
    if flaw == "syntax-named":
        # The name is read, then the quote never closes.
        lines.append(f'  reason: "{reason}')
    elif flaw == "empty-reason":
        lines.append('  reason: ""')
    else:
        lines.append(f'  reason: "{reason}"')
    lines += ["  target:", f"    samAccountName: {user}"]
    if flaw == "two-targets":
        lines.append(f"    userPrincipalName: {user}@remedy.test")
    lines.append("  activeDirectory:")
    if flaw == "string-bool":
        lines.append(f'    disabled: "{"yes" if disabled else "no"}"')
    elif flaw == "unknown-field":
        lines.append(f"    disable: {str(disabled).lower()}")
    else:
        lines.append(f"    disabled: {str(disabled).lower()}")
    lines.append(f"  onRelease: {'undo' if flaw == 'bad-enum' else on_release}")
    return "\n".join(lines) + "\n"


BAD_FIELDS = ["string-bool", "unknown-field", "bad-enum", "empty-reason", "two-targets"]
SYNTAX = ["syntax-named", "syntax-unnamed"]


def multidoc(name, user, rev):
    """A valid document, then one with a YAML syntax error: the whole file is rejected."""
    good = render(f"{name}-a", user, True, "leave", rev)
    bad = render(f"{name}-b", user, True, "leave", rev, flaw="syntax-named")
    return good + "---\n" + bad


# ---------------------------------------------------------------------------------------------
# git


def run(*args, cwd=None, capture=False):
    result = subprocess.run(
        args, cwd=cwd, check=False, text=True, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if result.returncode != 0:
        sys.exit(f"churn: {' '.join(args)} (in {cwd}) failed: {result.stderr.strip()}")
    return result.stdout if capture else None


def git(tree, *args, capture=False):
    return run("git", *args, cwd=tree, capture=capture)


def write_atomic(path, text):
    """As an editor saves: a hidden temporary file renamed over the target."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# generate


class Churn:
    def __init__(self, work, users, seed, commits):
        self.work = work
        self.rng = random.Random(seed)
        self.total = commits
        n = len(users)
        k = max(2, n // 10)
        self.classes = {}
        for i, user in enumerate(users):
            if i < k:
                self.classes[user] = "never"
            elif i < 2 * k:
                self.classes[user] = "bait"
            elif i < 2 * k + (n - 2 * k) // 4:
                self.classes[user] = "restore"
            elif i < 2 * k + (n - 2 * k) // 2:
                self.classes[user] = "leave"
            else:
                self.classes[user] = "shared"
        self.free = {c: [u for u in users if self.classes[u] == c] for c in ("restore", "leave")}
        self.shared = [u for u in users if self.classes[u] == "shared"]
        self.baits = [u for u in users if self.classes[u] == "bait"]
        # name -> manifest
        self.manifests = {}
        # file -> {kind, names, user, flaw}  (bait files and duplicates)
        self.others = {}
        self.gone_others = {}
        self.next_id = 0
        self.commits = []  # {index, mode, ops}
        self.ops = []
        self.tree = None
        self.mode = None
        # originals whose duplicate left in the current pull batch: not removed in the same batch
        self.dup_gone_in_batch = set()
        self.invalid_versions = []  # {file, text, why}
        self.target_live = max(3, (len(self.free["restore"]) + len(self.free["leave"]) + len(self.shared)) // 2)

    # -- bookkeeping ---------------------------------------------------------------------------

    def new_name(self, prefix):
        self.next_id += 1
        return f"{prefix}-{self.next_id:04d}"

    def path(self, file):
        return os.path.join(self.tree, file)

    def put(self, file, text):
        if self.mode == "direct":
            write_atomic(self.path(file), text)
        else:
            with open(self.path(file), "w") as f:
                f.write(text)

    def delete(self, file):
        os.remove(self.path(file))

    def live(self):
        return [m for m in self.manifests.values() if m["removed_at"] is None]

    def commit_index(self):
        return len(self.commits)

    def write_manifest(self, m):
        text = render(m["name"], m["user"], m["disabled"], m["on_release"], m["rev"], m["flaw"])
        self.put(m["file"], text)
        if m["flaw"] is None:
            m["versions"].append({
                "text": text, "disabled": m["disabled"], "onRelease": m["on_release"], "rev": m["rev"],
                "firstCommit": self.commit_index(),
            })
        else:
            self.invalid_versions.append({"file": m["file"], "text": text, "why": m["flaw"]})

    def has_dup(self, m):
        return any(o["kind"] == "duplicate" and o["of"] == m["name"] for o in self.others.values())

    # -- operations ----------------------------------------------------------------------------

    def op_add(self):
        r = self.rng.random()
        if self.free["restore"] and r < 0.3:
            user, on_release, cls = self.free["restore"].pop(self.rng.randrange(len(self.free["restore"]))), "restore", "restore"
        elif self.free["leave"] and r < 0.55:
            user, on_release, cls = self.free["leave"].pop(self.rng.randrange(len(self.free["leave"]))), "leave", "leave"
        else:
            user, on_release, cls = self.rng.choice(self.shared), self.rng.choice(["restore", "leave"]), "shared"
        name = self.new_name("churn")
        m = {
            "name": name, "user": user, "class": cls, "file": f"{name}.yaml", "on_release": on_release,
            "disabled": self.rng.random() < 0.85, "rev": 1, "flaw": None, "removed_at": None,
            "added_at": self.commit_index(), "versions": [], "flaws": [],
        }
        self.manifests[name] = m
        self.write_manifest(m)
        self.ops.append(f"add {name} ({user}, disabled={str(m['disabled']).lower()}, onRelease={on_release})")

    def op_change(self):
        live = self.live()
        if not live:
            return self.op_add()
        m = self.rng.choice(live)
        m["rev"] += 1
        if m["flaw"] is not None:
            m["flaw"] = None
            m["flaws"].append([self.commit_index(), None])
            what = "fixed"
        elif self.rng.random() < 0.5:
            m["disabled"] = not m["disabled"]
            what = f"disabled={str(m['disabled']).lower()}"
        else:
            what = "reason"
        self.write_manifest(m)
        self.ops.append(f"change {m['name']} ({what})")

    def op_remove(self):
        live = [m for m in self.live() if not self.has_dup(m) and m["name"] not in self.dup_gone_in_batch]
        if not live:
            return self.op_change()
        m = self.rng.choice(live)
        self.delete(m["file"])
        m["removed_at"] = self.commit_index()
        self.ops.append(f"remove {m['name']} ({m['user']}, onRelease={m['on_release']})")

    def op_invalid(self):
        kinds = ["bait-bad-field", "bait-syntax", "bait-multidoc", "break", "break", "duplicate", "tidy"]
        kind = self.rng.choice(kinds)
        if kind == "bait-bad-field" or kind == "bait-syntax":
            flaw = self.rng.choice(BAD_FIELDS if kind == "bait-bad-field" else SYNTAX)
            name, user = self.new_name("bait"), self.rng.choice(self.baits)
            text = render(name, user, True, self.rng.choice(["restore", "leave"]), 1, flaw)
            file = f"{name}.yaml"
            self.put(file, text)
            self.others[file] = {"kind": kind, "names": [name], "user": user, "flaw": flaw, "added_at": self.commit_index()}
            self.invalid_versions.append({"file": file, "text": text, "why": flaw})
            self.ops.append(f"INVALID new {name} ({flaw}, bait {user})")
        elif kind == "bait-multidoc":
            name, user = self.new_name("bait"), self.rng.choice(self.baits)
            text = multidoc(name, user, 1)
            file = f"{name}.yaml"
            self.put(file, text)
            self.others[file] = {"kind": kind, "names": [f"{name}-a", f"{name}-b"], "user": user, "flaw": "syntax-in-2nd-doc",
                                 "added_at": self.commit_index()}
            self.invalid_versions.append({"file": file, "text": text, "why": "valid document + syntax error"})
            self.ops.append(f"INVALID new {name} (a valid document then a syntax error, bait {user})")
        elif kind == "break":
            live = [m for m in self.live() if m["flaw"] is None]
            if not live:
                return self.op_add()
            m = self.rng.choice(live)
            m["flaw"] = self.rng.choice(BAD_FIELDS + SYNTAX)
            m["flaws"].append([self.commit_index(), m["flaw"]])
            m["rev"] += 1
            # The broken version says something else too: none of it may be applied.
            broken = dict(m, disabled=not m["disabled"])
            text = render(m["name"], m["user"], broken["disabled"], m["on_release"], m["rev"], m["flaw"])
            self.put(m["file"], text)
            self.invalid_versions.append({"file": m["file"], "text": text, "why": m["flaw"]})
            self.ops.append(f"INVALID break {m['name']} ({m['flaw']}, the broken text says disabled={str(broken['disabled']).lower()})")
        elif kind == "duplicate":
            live = [m for m in self.live() if not self.has_dup(m)]
            if not live:
                return self.op_add()
            m = self.rng.choice(live)
            user = self.rng.choice(self.baits)
            file = self.new_name("dup") + ".yaml"
            text = render(m["name"], user, True, "leave", 1)
            self.put(file, text)
            self.others[file] = {"kind": "duplicate", "of": m["name"], "names": [m["name"]], "user": user, "flaw": "duplicate-name",
                                 "added_at": self.commit_index(), "text": text}
            self.ops.append(f"INVALID duplicate of {m['name']} in {file} (a valid document, bait {user})")
        else:  # tidy: an earlier bad file goes
            if not self.others:
                return self.op_invalid()
            file = self.rng.choice(sorted(self.others))
            self.remove_other(file)

    def remove_other(self, file):
        other = self.others.pop(file)
        other["removed_at"] = self.commit_index()
        self.gone_others[file] = other
        self.delete(file)
        if other["kind"] == "duplicate" and self.mode == "pull":
            self.dup_gone_in_batch.add(other["of"])
        self.ops.append(f"remove {file} ({other['flaw']})")

    def final_tidy(self):
        """The last commit: every manifest valid, no duplicates, no file whose names cannot be read."""
        for m in self.live():
            if m["flaw"] is not None:
                m["flaw"] = None
                m["flaws"].append([self.commit_index(), None])
                m["rev"] += 1
                self.write_manifest(m)
                self.ops.append(f"change {m['name']} (fixed)")
        for file, other in sorted(self.others.items()):
            if other["kind"] in ("duplicate", "bait-syntax"):
                self.remove_other(file)
        if not self.ops:
            self.op_change()

    # -- the run -------------------------------------------------------------------------------

    def commit(self):
        index = self.commit_index()
        git(self.tree, "add", "-A")
        message = f"churn {index:04d} [{self.mode}]: " + "; ".join(self.ops)
        git(self.tree, "commit", "-q", "--allow-empty", "-m", message)
        self.commits.append({"index": index, "mode": self.mode, "ops": self.ops})
        self.ops = []

    def one_commit(self, last):
        if last:
            self.final_tidy()
        else:
            live = len(self.live())
            add_weight = 0.45 if live < self.target_live else 0.2
            r = self.rng.random()
            if r < add_weight:
                self.op_add()
            elif r < add_weight + 0.3:
                self.op_change()
            elif r < add_weight + 0.48:
                self.op_remove()
            else:
                self.op_invalid()
                # A partially invalid set: a valid change in the same commit.
                if self.rng.random() < 0.5:
                    self.rng.choice([self.op_add, self.op_change, self.op_remove])()
        self.commit()

    def pause(self):
        """Mostly none (quick succession); sometimes long enough for remedy to load the set."""
        r = self.rng.random()
        if r < 0.1:
            time.sleep(self.rng.uniform(0.05, 0.5))

    def generate(self):
        author, watched = os.path.join(self.work, "author"), os.path.join(self.work, "watched")
        started = time.monotonic()
        done = 0
        batches = 0
        while done < self.total:
            size = min(self.total - done, self.rng.randint(1, 25))
            self.mode = "pull" if batches % 2 == 0 else "direct"
            batches += 1
            self.dup_gone_in_batch = set()
            if self.mode == "pull":
                self.tree = author
                git(author, "pull", "-q", "--ff-only")
            else:
                self.tree = watched
            for _ in range(size):
                self.one_commit(last=done == self.total - 1)
                done += 1
                if self.mode == "direct":
                    self.pause()
            if self.mode == "pull":
                git(author, "push", "-q")
                git(watched, "pull", "-q", "--ff-only")
                self.pause()
            else:
                git(watched, "push", "-q")
            if done % 100 < size or done == self.total:
                print(f"  {done:5d} commits ({time.monotonic() - started:5.1f} s)", flush=True)
        elapsed = time.monotonic() - started
        shas = {}
        for line in git(watched, "log", "--format=%H %s", capture=True).splitlines():
            sha, subject = line.split(" ", 1)
            if subject.startswith("churn "):
                shas[int(subject.split()[1])] = sha
        for c in self.commits:
            c["sha"] = shas[c["index"]]
        return elapsed, batches


def cmd_generate(args):
    with open(args.users) as f:
        users = [line.strip() for line in f if line.strip()]
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    churn = Churn(args.work, users, seed, args.commits)
    print(f"  seed {seed} (--seed {seed} makes the same commits again)")
    elapsed, batches = churn.generate()
    last_commit_at = time.time()
    model = {
        "seed": seed,
        "users": churn.classes,
        "commits": churn.commits,
        "batches": batches,
        "churnSeconds": elapsed,
        "lastCommitAt": last_commit_at,
        "manifests": churn.manifests,
        "others": churn.others,
        "goneOthers": churn.gone_others,
        "invalidVersions": churn.invalid_versions,
    }
    # What remedy must settle on: the final tree's manifests and generations, as remedy computes
    # them (`remedy validate -o json`). Every other version's generation is worked out by `check`.
    report = validate(args.remedy, os.path.join(args.work, "watched"))
    model["finalGenerations"] = {v["name"]: v["generation"] for v in report["valid"]}
    with open(os.path.join(args.work, "model.json"), "w") as f:
        json.dump(model, f, indent=1)
    kinds = collections.Counter(op.split()[0] if not op.startswith("INVALID") else "invalid"
                                for c in churn.commits for op in c["ops"])
    invalid_commits = sum(1 for c in churn.commits if any(op.startswith("INVALID") for op in c["ops"]))
    print(f"  {len(churn.commits)} commits in {elapsed:.1f} s ({batches} batches, pulled and direct in turn): "
          f"{kinds['add']} adds, {kinds['change']} changes, {kinds['remove']} removals, "
          f"{kinds['invalid']} invalid files or edits in {invalid_commits} commits")


def validate(remedy, directory):
    result = subprocess.run([remedy, "validate", "-o", "json", directory], text=True, capture_output=True)
    if result.returncode not in (0, 1):
        sys.exit(f"churn: remedy validate {directory} failed: {result.stderr}")
    return json.loads(result.stdout)


def generations(work, remedy, model):
    """name -> generation -> version, from remedy validate on every version written; and a check of
    the model itself: each version it calls valid is valid, each one it calls invalid is not."""
    base = os.path.join(work, "versions")
    by_round = collections.defaultdict(list)
    for m in model["manifests"].values():
        for i, version in enumerate(m["versions"]):
            by_round[i].append((m["name"], version))
    out = collections.defaultdict(dict)
    for i, versions in sorted(by_round.items()):
        directory = os.path.join(base, f"valid-{i}")
        os.makedirs(directory)
        for name, version in versions:
            with open(os.path.join(directory, f"{name}.yaml"), "w") as f:
                f.write(version["text"])
        report = validate(remedy, directory)
        if report["diagnostics"]:
            sys.exit(f"churn: model error: versions taken for valid are not: {report['diagnostics'][:3]}")
        got = {v["name"]: v["generation"] for v in report["valid"]}
        for name, version in versions:
            out[name][got[name]] = {k: version[k] for k in ("disabled", "onRelease", "rev", "firstCommit")}
    # The duplicates: valid documents on their own, under the name of a manifest of the set.
    duplicates = [(f, o) for f, o in sorted({**model["goneOthers"], **model["others"]}.items()) if o["kind"] == "duplicate"]
    rounds, seen = collections.defaultdict(list), collections.Counter()
    for file, other in duplicates:
        rounds[seen[other["of"]]].append((file, other))
        seen[other["of"]] += 1
    for i, batch in sorted(rounds.items()):
        directory = os.path.join(base, f"duplicates-{i}")
        os.makedirs(directory)
        for file, other in batch:
            with open(os.path.join(directory, file), "w") as f:
                f.write(other["text"])
        got = {v["name"]: v["generation"] for v in validate(remedy, directory)["valid"]}
        for file, other in batch:
            other["generation"] = got.get(other["of"])
    directory = os.path.join(base, "invalid")
    os.makedirs(directory)
    for j, version in enumerate(model["invalidVersions"]):
        with open(os.path.join(directory, f"{j:05d}.yaml"), "w") as f:
            f.write(version["text"])
    report = validate(remedy, directory)
    if report["valid"]:
        sys.exit(f"churn: model error: versions taken for invalid are valid: {report['valid'][:3]}")
    rejected = {d["file"] for d in report["diagnostics"]}
    if len(rejected) != len(model["invalidVersions"]):
        sys.exit(f"churn: model error: {len(model['invalidVersions']) - len(rejected)} invalid versions not rejected")
    return out


# ---------------------------------------------------------------------------------------------
# the final state, as the model has it


def load_model(work):
    with open(os.path.join(work, "model.json")) as f:
        return json.load(f)


def final_state(model):
    """The final commit's intended state."""
    final = {}  # name -> (generation, manifest)
    for name, m in model["manifests"].items():
        if m["removed_at"] is not None:
            continue
        assert m["flaw"] is None, f"{name} is invalid in the final commit"
        final[name] = (model["finalGenerations"].get(name), m)
    baits = sorted({n for o in model["others"].values() for n in o["names"]})
    return final, baits


def flaw_at(m, commit):
    """What was wrong with a manifest's file at a commit (None: valid)."""
    flaw = None
    for at, what in m["flaws"]:
        if commit is not None and at <= commit:
            flaw = what
    return flaw


def overruled(final):
    """The final manifests that ask an account enabled while another asks it disabled: the safer
    state wins, and their status is Stalled/Conflict."""
    disabling = {m["user"] for _, m in final.values() if m["versions"][-1]["disabled"]}
    return {name for name, (_, m) in final.items() if not m["versions"][-1]["disabled"] and m["user"] in disabling}


def unsettled(model, current):
    final, _ = final_state(model)
    conflicts = overruled(final)
    waiting = []
    for name, (generation, _) in sorted(final.items()):
        s = current.get(name)
        ready, stalled = condition(s or {}, "Ready"), condition(s or {}, "Stalled")
        if s is None:
            waiting.append(f"{name}: no status")
        elif s.get("observedGeneration") != generation:
            waiting.append(f"{name}: generation {s.get('observedGeneration')}, not {generation}")
        elif condition(s, "Reconciling").get("status") == "True":
            waiting.append(f"{name}: Reconciling ({ready.get('reason')})")
        elif name in conflicts:
            if stalled.get("status") != "True" or stalled.get("reason") != "Conflict":
                waiting.append(f"{name}: Stalled={stalled.get('status')}/{stalled.get('reason')}, expected True/Conflict")
        elif ready.get("status") != "True":
            waiting.append(f"{name}: Ready={ready.get('status')}/{ready.get('reason')}")
    for name, m in sorted(model["manifests"].items()):
        s = current.get(name)
        if m["removed_at"] is not None and s is not None and s.get("observedGeneration"):
            ready = condition(s, "Ready")
            waiting.append(f"{name} (removed): still known, Ready={ready.get('status')}/{ready.get('reason')}")
    return waiting


def cmd_settle(args):
    model = load_model(args.work)
    started = time.monotonic()
    deadline = started + args.timeout
    last = None
    while True:
        try:
            waiting = unsettled(model, statuses(args.remedy))
        except CommandFailed as error:
            waiting = [str(error)]
        if not waiting:
            seconds = time.time() - model["lastCommitAt"]
            print(f"  settled within {seconds:.1f} s of the last commit")
            with open(os.path.join(args.work, "settle.json"), "w") as f:
                json.dump({"seconds": seconds}, f)
            return 0
        if time.monotonic() > deadline:
            print(f"  NOT settled within {args.timeout} s; {len(waiting)} manifest(s) waiting, e.g.:", file=sys.stderr)
            for line in waiting[:15]:
                print(f"    {line}", file=sys.stderr)
            return 1
        summary = f"{len(waiting)} waiting"
        if summary != last:
            print(f"  ... {summary} ({waiting[0]})", flush=True)
            last = summary
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# check


def cmd_check(args):
    model = load_model(args.work)
    model["generations"] = generations(args.work, args.remedy, model)
    final, baits = final_state(model)
    classes = {u.lower(): c for u, c in model["users"].items()}
    sha_index = {c["sha"]: c["index"] for c in model["commits"]}
    mode_of = {c["index"]: c["mode"] for c in model["commits"]}
    failures, notes = [], []

    def fail(text):
        failures.append(text)

    # The model against remedy's own reading of the final tree.
    got = model["finalGenerations"]
    want = {}
    for name, (_, m) in final.items():
        rev = m["versions"][-1]["rev"]
        want[name] = next((g for g, v in model["generations"][name].items() if v["rev"] == rev), None)
    if got != want:
        sys.exit(f"churn: model error: the final tree validates as {len(got)} manifests, the model has {len(want)}: "
                 f"{sorted(set(got.items()) ^ set(want.items()))[:5]}")

    history = remedy_json(args.remedy, "history")
    with open(os.path.join(args.work, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    actions = [(r, r["event"]) for r in history if r["event"]["kind"] == "action"]
    outcomes = collections.Counter(e["outcome"] for _, e in actions)

    # 1. Nothing from a set that never loaded: every record comes from a manifest version that was
    #    valid in a commit, and asks what that version says.
    valid_names = {name for name, m in model["manifests"].items() if m["versions"]}
    all_others = {**model["goneOthers"], **model["others"]}
    bait_users = {u.lower() for u, c in model["users"].items() if c == "bait"}
    attribution = collections.Counter()
    for record, event in actions:
        rid = record["id"]
        user = identity_sam(event)
        dn = str(event.get("resolved", {}).get("adDn", "")).lower()
        if user in bait_users or any(f"cn={b}," in dn for b in bait_users):
            fail(f"record {rid}: {event['action']} {event['outcome']} on bait account {user}, which only manifests "
                 f"that never loaded name: {json.dumps(event)}")
        for ref in event.get("manifests", []):
            name, generation, commit = ref["name"], ref["generation"], ref.get("commit")
            if name not in valid_names:
                fail(f"record {rid}: {event['action']} {event['outcome']} for {name}, which was never valid in any "
                     f"commit: {json.dumps(event)}")
                continue
            version = model["generations"][name].get(generation)
            m = model["manifests"][name]
            ci = sha_index.get(commit)
            if version is None:
                dup = next(((f, o) for f, o in all_others.items() if o.get("generation") == generation), None)
                if dup is None:
                    fail(f"record {rid}: {event['action']} {event['outcome']} for {name} generation {generation}, "
                         f"which no committed valid version of it has (a broken or torn text?): {json.dumps(event)}")
                    continue
                file, other = dup
                fail(f"record {rid}: {event['action']} {event['outcome']} on {user} for {name} generation {generation}: "
                     f"that is the DUPLICATE document {file} (added in commit {other['added_at']}, removed in "
                     f"{other.get('removed_at')}), which uses the name of {m['file']} to target bait {other['user']}. "
                     f"At the cited commit {ci}, {m['file']} was {flaw_at(m, ci) or 'valid'}"
                     f"{' (a YAML syntax error before metadata.name: the file names no manifest)' if flaw_at(m, ci) == 'syntax-unnamed' else ''}"
                     f"; the manifest's last valid version targets {m['user']}")
                continue
            if m["user"].lower() != user:
                fail(f"record {rid}: {event['action']} on {user} for {name}, which names {m['user']}")
            if commit and ci is None:
                fail(f"record {rid}: cites commit {commit}, not one of this run's")
            cause = json.dumps(event.get("cause"))
            released = "release" in cause.lower()
            if released:
                if m["removed_at"] is None:
                    fail(f"record {rid}: {event['action']} {event['outcome']} releases {name}, which was never removed "
                         f"(cited commit {ci}): {json.dumps(event)}")
                elif ci is not None and ci < m["removed_at"]:
                    attribution["release cites a commit before the removal"] += 1
                if m["on_release"] != "restore":
                    fail(f"record {rid}: restores for {name}, whose onRelease is {m['on_release']}")
            elif event["outcome"] in ("succeeded", "drift-corrected", "failed"):
                wants = event["action"] == "disable-account"
                if event["action"] in ("disable-account", "enable-account") and version["disabled"] != wants:
                    fail(f"record {rid}: {event['action']} for {name} rev {version['rev']}, which says "
                         f"disabled: {str(version['disabled']).lower()}: {json.dumps(event)}")
            if ci is not None and not released and version["firstCommit"] > ci:
                # The working tree (or the pulled commit) was read before git moved HEAD: remedy
                # records the commit HEAD names when it takes the set in.
                key = "direct" if mode_of.get(version["firstCommit"]) == "direct" else "pull"
                attribution[f"cites a commit older than the version ({key} batch)"] += 1
        if event["outcome"] not in ("succeeded", "restored", "drift-corrected"):
            notes.append(f"record {rid}: {event['action']} {event['outcome']} on {user}: {event.get('error', '')}")

    # Nobody but remedy writes these accounts during the run: there is no drift to correct. A
    # drift-corrected record here says someone else undid remedy's change, which is not so.
    previous = {}
    for record, event in actions:
        user = identity_sam(event)
        if event["outcome"] == "drift-corrected":
            before = previous.get(user)
            fail(f"record {record['id']}: {event['action']} recorded as drift-corrected on {user} for "
                 f"{[m['name'] for m in event['manifests']]} ({event.get('note', '')}), but only remedy wrote this "
                 f"account: its previous change was record {before[0]}, {before[1]} {before[2]} for {before[3]}"
                 if before else f"record {record['id']}: drift-corrected on {user}, which nobody else wrote")
        if event["outcome"] in ("succeeded", "restored", "drift-corrected"):
            previous[user] = (record["id"], event["action"], event["outcome"], [m["name"] for m in event["manifests"]])

    # 2. The directory against the final commit, and against the history.
    dc = disabled_accounts(args.ldap_ou)
    last_change = {}
    for record, event in actions:
        if event["outcome"] in ("succeeded", "restored", "drift-corrected") and event["action"] in (
                "disable-account", "enable-account"):
            last_change[identity_sam(event)] = (record["id"], event["action"] == "disable-account")
    wanted = collections.defaultdict(list)
    for name, (_, m) in final.items():
        wanted[m["user"].lower()].append((name, m["versions"][-1]["disabled"]))
    counts = collections.Counter()
    for user, cls in sorted(classes.items()):
        if user not in dc:
            fail(f"{user}: not found in {args.ldap_ou}")
            continue
        disabled = dc[user]
        state = "disabled" if disabled else "enabled"
        replay = last_change.get(user)
        if replay is not None and replay[1] != disabled:
            fail(f"{user}: {state}, but remedy's last recorded change (record {replay[0]}) left it "
                 f"{'disabled' if replay[1] else 'enabled'}")
        if replay is None and disabled:
            fail(f"{user}: disabled, and no record says remedy changed it")
        if user in wanted:
            expect = any(d for _, d in wanted[user])
            if expect != disabled:
                fail(f"{user}: {state}; the final commit's manifests {wanted[user]} want it "
                     f"{'disabled' if expect else 'enabled'}")
            counts["named by the final commit: as it declares"] += 1
        elif cls in ("never", "bait"):
            if disabled or replay is not None:
                fail(f"{user} ({cls}): {state}, record {replay}: it must never have been touched")
            counts["never named (never)" if cls == "never" else "named only by manifests that never loaded (bait)"] += 1
        elif cls == "restore":
            if disabled:
                fail(f"{user}: disabled, though every manifest that named it (onRelease: restore) is gone")
            counts["released (restore): enabled again"] += 1
        else:
            used = any(m["user"].lower() == user for m in model["manifests"].values())
            if not used:
                counts[f"never named ({cls})"] += 1
                if disabled or replay is not None:
                    fail(f"{user}: never named by any manifest, yet {state} / record {replay}")
            else:
                counts[f"released ({cls}): as remedy left it ({state})"] += 1

    # 3. The bait accounts, asked one by one as an operator would.
    for user in sorted(bait_users):
        records = remedy_json(args.remedy, "history", "--identity", f"sam:{user}")
        if records:
            fail(f"remedy history --identity sam:{user}: {len(records)} record(s), expected none: {json.dumps(records[:2])}")

    # 4. Statuses: the final manifests Ready, the never-valid ones Stalled/Invalid.
    current = statuses(args.remedy)
    for name in baits:
        s = current.get(name)
        if s is None:
            fail(f"{name}: no status; a manifest that never loads is reported Stalled/Invalid")
            continue
        stalled = condition(s, "Stalled")
        if stalled.get("status") != "True" or stalled.get("reason") != "Invalid":
            fail(f"{name}: Stalled={stalled.get('status')}/{stalled.get('reason')}, expected True/Invalid")
    stale = sorted(n for n in current if n not in final and n not in baits)
    if stale:
        notes.append(f"{len(stale)} status(es) of manifests no longer in the set are still listed "
                     f"(never-valid names whose files were deleted): {', '.join(stale[:8])}{' ...' if len(stale) > 8 else ''}")

    summary = {
        "records": len(history),
        "actionOutcomes": dict(outcomes),
        "finalManifests": len(final),
        "finalInvalid": len(baits),
        "users": dict(counts),
        "attribution": dict(attribution),
        "failures": failures,
        "notes": notes,
    }
    with open(os.path.join(args.work, "check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"  history: {len(history)} records; actions by outcome: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"  final commit: {len(final)} valid manifests, {len(baits)} never-valid ones (Stalled/Invalid)")
    for key, value in sorted(counts.items()):
        print(f"  accounts {key}: {value}")
    print("  (never-named and bait accounts: enabled, and no history record names them)")
    for key, value in sorted(attribution.items()):
        print(f"  note: {value} record(s) {key}")
    return report_findings(failures, notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--work", required=True)
    g.add_argument("--commits", type=int, required=True)
    g.add_argument("--users", required=True)
    g.add_argument("--seed", type=int)
    g.add_argument("--remedy", required=True)
    s = sub.add_parser("settle")
    s.add_argument("--work", required=True)
    s.add_argument("--remedy", required=True)
    s.add_argument("--timeout", type=float, required=True)
    c = sub.add_parser("check")
    c.add_argument("--work", required=True)
    c.add_argument("--remedy", required=True)
    c.add_argument("--ldap-ou", required=True)
    args = parser.parse_args()
    for key, value in (("GIT_AUTHOR_NAME", "churn"), ("GIT_AUTHOR_EMAIL", "churn@remedy.test"),
                       ("GIT_COMMITTER_NAME", "churn"), ("GIT_COMMITTER_EMAIL", "churn@remedy.test")):
        os.environ.setdefault(key, value)
    return {"generate": cmd_generate, "settle": cmd_settle, "check": cmd_check}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
