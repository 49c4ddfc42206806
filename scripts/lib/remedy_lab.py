#!/usr/bin/env python3
"""What the harness helpers share: remedy serve, its JSON log and /metrics, the API and the CLI,
and the test DC as its administrator. Used by churn.py, faults.py and bench.py, and from the shell
by scripts/reliability (the command line below). Python's standard library only.

- remedy serve: `write_config` writes a work directory's remedy.yaml and operator.token (and
  points REMEDY_SERVER and REMEDY_TOKEN_FILE at them); `Daemon` starts `remedy serve
  --log-format json` on it, one log per start (DIR/run-NN.log) and its pid in DIR/remedy.pid (for
  the shell's trap), and stops it (SIGTERM, or SIGKILL).
- The daemon's log is read as JSON, never as text: `Log` holds one log file's events
  (tracing-subscriber's JSON lines: timestamp, level, target, fields.message and the event's own
  fields); a pass is a "reconciled" event. A line that is not JSON is no log event: a panic's
  message, written by Rust's panic hook.
- /metrics is read as the Prometheus text format: `parse_metrics`, `metrics`, `by_label`.
- The API and the CLI: `http`, `api`, `request_reconcile`, `remedy_json`, `statuses`, `condition`,
  `verify_history`, and the history's action records.
- The test DC (eval "$(scripts/samba-dc env)"), as its administrator or the action account over
  LDAPS: `ldap` (the OpenLDAP tools), `disabled_accounts`, and `Ou`, a private OU of users under
  $REMEDY_TEST_TESTS_OU (created by one ldapadd, re-enabled by one ldapmodify, deleted leaves
  first).

From the shell:
    remedy_lab.py config --work DIR --manifests PATH --ou DN --token-name NAME [--debounce D]
                         [--resync CRON] [--graph-sim URL] [--connect-timeout T --operation-timeout T]
                         [--watch-notification true|false] [--watch-poll-interval D] [--delta-interval D]
                         [--contest-corrections N --contest-window D]
        writes DIR/remedy.yaml and DIR/operator.token; prints the API's URL
    remedy_lab.py ou-create --ou DN --sam-prefix P --digits D --count N --names FILE
        the OU and N enabled users P0..P(N-1) (D digits), one ldapadd; their names to FILE
    remedy_lab.py ou-delete --ou DN
        everything in the OU and the OU, leaves first
    remedy_lab.py log-check LOG [--expected MESSAGE]...
        exit 1 (and the panic's lines) if remedy panicked; notes the ERROR/WARN events whose
        message starts with none of the expected ones
"""

import argparse
import collections
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

# graph-sim's tenant and application, as faults.py seeds it and write_config configures remedy.
TENANT = "6f1c2a34-0000-4000-8000-00000000d3e0"
CLIENT_ID = "0b7d9e51-0000-4000-8000-0000000a9901"

UF_ACCOUNTDISABLE = 0x2

# The daemon's log events the helpers wait for or count, by their message (fields.message).
PASS = "reconciled"  # daemon/src/controller/mod.rs: one per pass, with the fields below
PASS_FIELDS = ("sent", "failed", "recovered", "duration_ms")
INTERRUPTED = "actions were interrupted by the last stop"  # cli/serve.rs, field intents
SETTLED = "settled an interrupted action"  # controller/recovery.rs, one per intent settled


class Failure(Exception):
    """A check or a step failed: the message says what."""


class CommandFailed(Failure):
    """A remedy CLI command exited non-zero."""


def say(text):
    print(f"  {text}", flush=True)


def tail(text, lines=15):
    return "\n".join(text.splitlines()[-lines:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def report_findings(failures, notes=()):
    """Prints the first notes and failures of a check (the failures to stderr); returns the exit
    code: 1 when anything failed."""
    for note in list(notes)[:10]:
        print(f"  note: {note}")
    if failures:
        print(f"\n  {len(failures)} FAILURE(S):", file=sys.stderr)
        for line in failures[:40]:
            print(f"    {line}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# remedy serve: its configuration, the process, its log


def yaml_scalar(value):
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def write_config(work, manifests, ou, token_name, debounce=None, resync="0 0 0 1 1 *", max_changes=100000,
                 graph_sim=None, connect_timeout=None, operation_timeout=None, watch=None, delta_interval=None,
                 contest=None):
    """DIR/remedy.yaml (Active Directory as the action account of the test DC, scoped to `ou`;
    Entra ID on graph-sim at `graph_sim`, its secret in DIR/graph.secret; the store in DIR/store;
    the API on a free loopback port) and DIR/operator.token, a security-operator token. Sets
    REMEDY_SERVER and REMEDY_TOKEN_FILE for the CLI and `api`; returns the API's URL.

    The re-containment options (issue 15) are written only when given, so that the file still
    loads in a binary that does not know them: `watch` ({"notification": bool, "pollInterval":
    "1s"}: activeDirectory.watch), `delta_interval` ("10s": entraId.deltaInterval, only with
    graph_sim) and `contest` ({"corrections": 3, "window": "10m"})."""
    env = os.environ
    port = free_port()
    token = secrets.token_hex(32)
    token_file = os.path.join(work, "operator.token")
    with open(token_file, "w") as f:
        f.write(token)
    os.chmod(token_file, 0o600)
    lines = ["manifests:", f"  path: {manifests}"]
    if debounce:
        lines.append(f"  debounce: {debounce}")
    lines += ["guardrails:", f'  allowedScopes: ["{ou}"]', f"  maxChangesPerReconcile: {max_changes}",
              "activeDirectory:", f"  url: {env['REMEDY_TEST_LDAPS_URL']}", f"  caFile: {env['REMEDY_TEST_CA_FILE']}",
              f"  bindUser: {env['REMEDY_TEST_ACTION_BIND']}",
              f"  passwordFile: {env['REMEDY_TEST_ACTION_PASSWORD_FILE']}", f"  baseDn: {env['REMEDY_TEST_BASE_DN']}"]
    if connect_timeout:
        lines.append(f"  connectTimeout: {connect_timeout}")
    if operation_timeout:
        lines.append(f"  operationTimeout: {operation_timeout}")
    if watch:
        lines.append("  watch:")
        lines += [f"    {key}: {yaml_scalar(value)}" for key, value in watch.items()]
    if graph_sim:
        lines += ["entraId:", f"  tenantId: {TENANT}", f"  clientId: {CLIENT_ID}",
                  f"  clientSecretFile: {work}/graph.secret", f"  authorityHost: {graph_sim}", f"  graphUrl: {graph_sim}"]
        if delta_interval is not None:
            lines.append(f"  deltaInterval: {delta_interval}")
    if contest:
        lines.append("contest:")
        lines += [f"  {key}: {yaml_scalar(value)}" for key, value in contest.items()]
    lines += [f'resync: "{resync}"', "store:", f"  path: {work}/store", "api:", f"  listen: 127.0.0.1:{port}",
              "  tokens:", f"    - name: {token_name}", "      role: security-operator",
              f"      sha256: {hashlib.sha256(token.encode()).hexdigest()}"]
    with open(os.path.join(work, "remedy.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    server = f"http://127.0.0.1:{port}"
    os.environ["REMEDY_SERVER"] = server
    os.environ["REMEDY_TOKEN_FILE"] = token_file
    return server


def event_message(event):
    return str(event.get("fields", {}).get("message", ""))


def event_time(event):
    """An event's timestamp as Unix time (tracing writes RFC 3339, up to nanoseconds)."""
    stamp = event["timestamp"].replace("Z", "+00:00")
    head, sep, rest = stamp.partition(".")
    if sep:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        stamp = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(stamp).timestamp()


class Log:
    """One log file of `remedy serve --log-format json`, read incrementally as it grows."""

    def __init__(self, path):
        self.path = path
        self.offset, self.partial = 0, b""
        self.events = []  # every JSON event so far
        self.other = []  # lines that are not JSON events (a panic's message)
        self._passes = []

    def refresh(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return self
        complete, newline, self.partial = (self.partial + chunk).rpartition(b"\n")
        if not newline:
            return self
        for raw in complete.split(b"\n"):
            line = raw.decode(errors="replace")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "fields" not in event:
                if line.strip():
                    self.other.append(line)
                continue
            self.events.append(event)
            if event_message(event) == PASS:
                fields = event["fields"]
                self._passes.append({k: int(fields[k]) for k in PASS_FIELDS if k in fields})
        return self

    def passes(self):
        """The passes so far: dicts of sent, failed, recovered, duration_ms."""
        return self.refresh()._passes

    def find(self, prefix):
        """The events whose message starts with `prefix`."""
        return [e for e in self.refresh().events if event_message(e).startswith(prefix)]

    def panics(self):
        """Rust's panic messages (`thread '...' panicked at ...`), the unfinished last line too."""
        lines = self.refresh().other + [self.partial.decode(errors="replace")]
        return [line for line in lines if "panicked" in line]

    def interrupted_intents(self):
        """The intents the start found unsettled (0 when it found none)."""
        found = self.find(INTERRUPTED)
        return int(found[0]["fields"].get("intents", 0)) if found else 0

    def unexpected(self, expected=()):
        """ERROR and WARN events whose message starts with none of `expected`."""
        return [e for e in self.refresh().events if e.get("level") in ("ERROR", "WARN")
                and not any(event_message(e).startswith(m) for m in expected)]

    def tail(self, lines=15):
        """The last lines, events shown as `time LEVEL message key=value...`."""
        shown = []
        with open(self.path, errors="replace") as f:
            for line in f.read().splitlines()[-lines:]:
                try:
                    e = json.loads(line)
                    fields = {k: v for k, v in e["fields"].items() if k != "message"}
                    shown.append(f"{e['timestamp']} {e['level']} {event_message(e)} "
                                 + " ".join(f"{k}={v}" for k, v in fields.items()))
                except (ValueError, KeyError, TypeError, AttributeError):
                    shown.append(line)
        return "\n".join(shown)


class Daemon:
    """`remedy serve` on a work directory's remedy.yaml: one log per start (run-NN.log), its pid
    in remedy.pid while it runs."""

    def __init__(self, work, remedy):
        self.work, self.remedy = work, remedy
        self.process = None
        self.runs = 0
        self.log = None  # the current run's Log
        self.log_path = None
        self.started = None

    def start(self):
        """Starts a new run; returns the monotonic time it was started."""
        self.runs += 1
        self.log_path = os.path.join(self.work, f"run-{self.runs:02d}.log")
        self.log = Log(self.log_path)
        env = dict(os.environ, NO_COLOR="1", REMEDY_LOG="info")
        with open(self.log_path, "w") as out:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                [self.remedy, "serve", "--log-format", "json", "--config", os.path.join(self.work, "remedy.yaml")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        with open(self.pid_path(), "w") as f:
            f.write(str(self.process.pid))
        return self.started

    def pid_path(self):
        return os.path.join(self.work, "remedy.pid")

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def check_alive(self, what=""):
        if not self.alive():
            raise Failure(f"remedy serve exited ({self.process.returncode}){what}; {self.log_path}:\n{self.log.tail()}")

    def passes(self):
        return self.log.passes()

    def wait_event(self, prefix, timeout, poll=0.05):
        """Until this run logs an event whose message starts with `prefix`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log.find(prefix)
            if found:
                return found[0]
            self.check_alive(f" before logging {prefix!r}")
            if time.monotonic() > deadline:
                raise Failure(f"no {prefix!r} event in {self.log_path} within {timeout} s:\n{self.log.tail()}")
            time.sleep(poll)

    def wait_pass(self, count, timeout, poll=0.005):
        """Until this run has logged `count` passes; (monotonic time seen, that pass)."""
        deadline = time.monotonic() + timeout
        while len(self.passes()) < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise Failure(f"no reconcile pass #{count} within {timeout} s; {self.log_path}:\n{self.log.tail()}")
            time.sleep(poll)
        return time.monotonic(), self.passes()[count - 1]

    def wait_http(self, path="/readyz", timeout=60, poll=0.005):
        """Until GET `path` answers 2xx; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        url = f"{os.environ['REMEDY_SERVER']}{path}"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return time.monotonic()
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            self.check_alive()
            if time.monotonic() > deadline:
                raise Failure(f"GET {path} of remedy serve did not answer 2xx within {timeout} s; "
                              f"{self.log_path}:\n{self.log.tail()}")
            time.sleep(poll)

    def memory(self):
        """VmHWM (peak RSS) and VmRSS in MiB, from /proc/PID/status."""
        values = {}
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(value.split()[0]) / 1024
        return values

    def kill_9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        os.remove(self.pid_path())

    def terminate(self, timeout=60):
        """SIGTERM; its exit code (Failure if it does not stop within `timeout` s). The seconds it
        took are in self.stop_seconds."""
        t0 = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise Failure(f"remedy serve did not stop within {timeout} s of SIGTERM") from None
        self.stop_seconds = time.monotonic() - t0
        os.remove(self.pid_path())
        return code

    def stop(self, timeout=60):
        """SIGTERM, exit 0 expected (a Failure otherwise); the seconds it took to stop."""
        code = self.terminate(timeout)
        if code != 0:
            raise Failure(f"remedy serve exited {code} on SIGTERM; {self.log_path}:\n{self.log.tail()}")
        return self.stop_seconds

    def stop_quietly(self, timeout=30):
        """SIGTERM if it runs (SIGKILL after `timeout` s): for cleanups."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------------------------------------
# the API, /metrics, the CLI


def http(method, url, body=None, headers=None, form=None, timeout=10, raw=False):
    """(status, body): the body parsed as JSON when it is (text otherwise, or always with raw)."""
    data = b"" if method == "POST" else None
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
            status, content = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, content = error.code, error.read()
    text = content.decode(errors="replace")
    if raw or not content:
        return status, text if raw else None
    try:
        return status, json.loads(content)
    except ValueError:
        return status, text


def api(method, path, body=None, timeout=30, raw=False):
    """A request to remedy serve's API ($REMEDY_SERVER) with the operator token ($REMEDY_TOKEN_FILE)."""
    with open(os.environ["REMEDY_TOKEN_FILE"]) as f:
        token = f.read().strip()
    return http(method, f"{os.environ['REMEDY_SERVER']}{path}", body=body,
                headers={"Authorization": f"Bearer {token}"}, timeout=timeout, raw=raw)


def request_reconcile(accept=(200, 202)):
    status, body = api("POST", "/v1/reconcile")
    if status not in accept:
        raise Failure(f"POST /v1/reconcile: {status} {str(body)[:200]}")
    return status


def readyz(timeout=5):
    return http("GET", f"{os.environ['REMEDY_SERVER']}/readyz", timeout=timeout)


def parse_metrics(text):
    """The Prometheus text format as {series: value}, each series with its labels as written
    (`remedy_reconciles_total{outcome="converged"}`)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                values[series] = float(value)
            except ValueError:
                pass
    return values


def by_label(values, name, label):
    """{label value: value} of the series of metric `name` (a one-label family)."""
    out = {}
    prefix = f'{name}{{{label}="'
    for series, value in values.items():
        if series.startswith(prefix) and series.endswith('"}'):
            out[series[len(prefix):-2]] = value
    return out


def metrics():
    """GET /metrics, parsed (Failure unless 200)."""
    status, text = api("GET", "/metrics", raw=True)
    if status != 200:
        raise Failure(f"GET /metrics: {status} {text[:200]}")
    return parse_metrics(text)


def remedy_json(remedy, *args):
    """`remedy ARGS -o json`, parsed (CommandFailed when it exits non-zero)."""
    result = subprocess.run([remedy, *args, "-o", "json"], text=True, capture_output=True)
    if result.returncode != 0:
        raise CommandFailed(f"remedy {' '.join(args)}: {result.stderr.strip()[:500]}")
    return json.loads(result.stdout)


def statuses(remedy):
    """`remedy status -o json` as {manifest name: status}."""
    data = remedy_json(remedy, "status")
    if isinstance(data, dict):
        data = data.get("manifests", [])
    return {s["name"]: s for s in data}


def condition(status, kind):
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def verify_history(remedy):
    """`remedy history verify`, its answer printed; whether it passed."""
    result = subprocess.run([remedy, "history", "verify"], text=True, capture_output=True)
    print("  remedy history verify: " + (result.stdout.strip() or result.stderr.strip()).replace("\n", "; "))
    return result.returncode == 0


def action_records(history):
    return [r for r in history if r["event"].get("kind") == "action"]


def identity_sam(event):
    """The sAMAccountName (lower case) a history event is about (the harness's manifests all
    name sam:...)."""
    identity = event.get("identity", "")
    if isinstance(identity, dict):
        identity = json.dumps(identity)
    identity = str(identity)
    return identity.split(":", 1)[1].lower() if identity.startswith("sam:") else identity.lower()


# ---------------------------------------------------------------------------------------------
# the test DC, as its administrator (or the action account)


def ldap_env():
    return dict(os.environ, LDAPTLS_CACERT=os.environ["REMEDY_TEST_CA_FILE"])


def ldap(tool, *args, stdin=None, who="admin", check=True, timeout=None):
    """An OpenLDAP tool (ldapsearch, ldapadd, ldapmodify, ldapdelete) against the test DC over
    LDAPS, bound as the administrator (or who="action": remedy's action account). With check, a
    non-zero exit is a Failure; a `timeout` (seconds) that expires returns None."""
    if who == "admin":
        bind, password = os.environ["REMEDY_TEST_ADMIN_BIND"], os.environ["REMEDY_TEST_ADMIN_PASSWORD_FILE"]
    else:
        bind, password = os.environ["REMEDY_TEST_ACTION_BIND"], os.environ["REMEDY_TEST_ACTION_PASSWORD_FILE"]
    argv = [tool, "-x", "-H", os.environ["REMEDY_TEST_LDAPS_URL"], "-D", bind, "-y", password, *args]
    try:
        result = subprocess.run(argv, env=ldap_env(), text=True, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        if check:
            raise Failure(f"{tool} {' '.join(args[:6])}: no answer within {timeout} s") from None
        return None
    if check and result.returncode != 0:
        raise Failure(f"{tool} {' '.join(args[:6])}: exit {result.returncode}: {result.stderr.strip()[:500]}")
    return result


def disabled_accounts(base, prefix=None, timeout=None):
    """sAMAccountName (lower case) -> disabled (userAccountControl has ACCOUNTDISABLE), for the
    users one level under `base` (whose sAMAccountName starts with `prefix`), as the administrator
    reads them (paged). Without a timeout a failed search is a Failure; with one, None when the DC
    does not answer within `timeout` s."""
    args = ["-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt"]
    if timeout is not None:
        args += ["-o", f"nettimeout={timeout}", "-l", str(timeout)]
    args += ["-b", base, "-s", "one", f"(&(objectClass=user)(sAMAccountName={prefix or ''}*))",
             "sAMAccountName", "userAccountControl"]
    if timeout is None:
        out = ldap("ldapsearch", *args).stdout
    else:
        result = ldap("ldapsearch", *args, check=False, timeout=timeout + 2)
        if result is None or result.returncode != 0:
            return None
        out = result.stdout
    users, sam, uac = {}, None, 0
    for line in out.splitlines() + [""]:
        if line.startswith("sAMAccountName: "):
            sam = line.split(": ", 1)[1].lower()
        elif line.startswith("userAccountControl: "):
            uac = int(line.split(": ", 1)[1])
        elif not line.strip() and sam:
            users[sam] = bool(uac & UF_ACCOUNTDISABLE)
            sam, uac = None, 0
    return users


class Ou:
    """An OU of test users: created with its users by one ldapadd, deleted leaves first."""

    def __init__(self, dn, suffix=None):
        self.dn, self.suffix = dn, suffix
        self.created = False

    @classmethod
    def private(cls, kind):
        """A new, uniquely named OU under $REMEDY_TEST_TESTS_OU: OU=<kind>-<6 hex digits>."""
        suffix = secrets.token_hex(3)
        return cls(f"OU={kind}-{suffix},{os.environ['REMEDY_TEST_TESTS_OU']}", suffix)

    def user_dn(self, sam):
        return f"CN={sam},{self.dn}"

    def create(self, sams, quiet=False):
        """The OU and its users (enabled: userAccountControl 512), one ldapadd; the seconds it took."""
        entries = [f"dn: {self.dn}\nobjectClass: organizationalUnit\n"]
        for sam in sams:
            entries.append(f"dn: {self.user_dn(sam)}\nobjectClass: user\nsAMAccountName: {sam}\n"
                           f"userPrincipalName: {sam}@remedy.test\nuserAccountControl: 512\n")
        t0 = time.monotonic()
        self.created = True
        ldap("ldapadd", stdin="\n".join(entries))
        seconds = time.monotonic() - t0
        if not quiet:
            say(f"{self.dn}: {len(sams)} enabled users created by one ldapadd in {seconds:.1f} s")
        return seconds

    def disabled(self, prefix=None, timeout=None):
        return disabled_accounts(self.dn, prefix, timeout)

    def re_enable(self, sams):
        """As the administrator: userAccountControl back to 512 (a normal, enabled account)."""
        ldap("ldapmodify", stdin="".join(
            f"dn: {self.user_dn(sam)}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n-\n\n"
            for sam in sams))

    def delete(self, quiet=False):
        """Everything in the OU, then the OU (a warning on stderr for what could not be deleted),
        if it was created."""
        if not self.created:
            return 0
        t0 = time.monotonic()
        result = ldap("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt", "-b", self.dn, "dn",
                      check=False)
        if result.returncode not in (0, 32):  # 32: no such object (already gone)
            print(f"warning: could not list {self.dn} to delete it (ldapsearch exit {result.returncode}: "
                  f"{result.stderr.strip()[:200]}); it is left on the DC", file=sys.stderr)
            return 0
        dns = [line[4:] for line in result.stdout.splitlines() if line.startswith("dn: ")]
        dns.sort(key=lambda dn: dn.count(","), reverse=True)
        if dns:
            result = ldap("ldapdelete", "-c", stdin="\n".join(dns) + "\n", check=False)
            if result.returncode != 0:
                print(f"warning: could not delete everything in {self.dn}: {result.stderr.strip()[:300]}",
                      file=sys.stderr)
        if not quiet:
            say(f"deleted {self.dn} ({len(dns)} entries) in {time.monotonic() - t0:.1f} s")
        return len(dns)


# ---------------------------------------------------------------------------------------------
# command line, for the shell scripts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("config")
    c.add_argument("--work", required=True)
    c.add_argument("--manifests", required=True)
    c.add_argument("--ou", required=True)
    c.add_argument("--token-name", required=True)
    c.add_argument("--debounce")
    c.add_argument("--resync", required=True)
    c.add_argument("--graph-sim")
    c.add_argument("--connect-timeout")
    c.add_argument("--operation-timeout")
    c.add_argument("--watch-notification", choices=("true", "false"))
    c.add_argument("--watch-poll-interval")
    c.add_argument("--delta-interval")
    c.add_argument("--contest-corrections", type=int)
    c.add_argument("--contest-window")
    o = sub.add_parser("ou-create")
    o.add_argument("--ou", required=True)
    o.add_argument("--sam-prefix", required=True)
    o.add_argument("--digits", type=int, required=True)
    o.add_argument("--count", type=int, required=True)
    o.add_argument("--names", required=True)
    d = sub.add_parser("ou-delete")
    d.add_argument("--ou", required=True)
    g = sub.add_parser("log-check")
    g.add_argument("log")
    g.add_argument("--expected", action="append", default=[])
    args = parser.parse_args()
    if args.command == "config":
        watch = {k: v for k, v in (("notification", args.watch_notification == "true" if args.watch_notification
                                    else None), ("pollInterval", args.watch_poll_interval)) if v is not None}
        contest = {k: v for k, v in (("corrections", args.contest_corrections), ("window", args.contest_window))
                   if v is not None}
        print(write_config(args.work, args.manifests, args.ou, args.token_name, debounce=args.debounce,
                           resync=args.resync, graph_sim=args.graph_sim, connect_timeout=args.connect_timeout,
                           operation_timeout=args.operation_timeout, watch=watch or None,
                           delta_interval=args.delta_interval, contest=contest or None))
    elif args.command == "ou-create":
        sams = [f"{args.sam_prefix}{i:0{args.digits}d}" for i in range(args.count)]
        with open(args.names, "w") as f:
            f.write("".join(f"{sam}\n" for sam in sams))
        Ou(args.ou).create(sams, quiet=True)
    elif args.command == "ou-delete":
        ou = Ou(args.ou)
        ou.created = True
        ou.delete(quiet=True)
    else:
        log = Log(args.log)
        panics = log.panics()
        if panics:
            print("\n".join(panics[:5]), file=sys.stderr)
            return 1
        unexpected = log.unexpected(args.expected)
        if unexpected:
            counts = collections.Counter(event_message(e) for e in unexpected)
            print(f"note: {len(unexpected)} other ERROR/WARN log event(s), e.g.:")
            for message, count in counts.most_common(5):
                print(f"  {count} x {message[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
