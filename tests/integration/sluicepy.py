"""What the Python integration tests share: the cluster from the CTest
fixture, a sluice started with its own config on free ports (the C
harness's way, in Python), and a scrape of its metrics endpoint."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def test_workers(opts):
    """workers = SLUICE_TEST_WORKERS unless opts sets it, else no line
    (sluice's default, one per online CPU), as the C harness does
    (harness.c test_workers)."""
    n = os.environ.get('SLUICE_TEST_WORKERS')
    if not n or re.search(r"^\s*workers\s*=", opts, re.M):
        return ""
    return f"workers = {n}\n"


_logs = 0


def log_path(tmpdir):
    """Where a sluice's log goes: SLUICE_TEST_LOG_DIR when CTest sets it
    (kept, so that tests/check_secrets.py reads every log of the run, as
    harness.c's log_path does), else tmpdir/sluice.log."""
    global _logs
    d = os.environ.get("SLUICE_TEST_LOG_DIR")
    if not d:
        return os.path.join(tmpdir, "sluice.log")
    os.makedirs(d, exist_ok=True)
    _logs += 1
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return os.path.join(d, f"{name}.{os.getpid()}.{_logs}.log")


def fail(msg, sl=None):
    print("FAIL: " + msg, file=sys.stderr)
    if sl is not None:
        sl.dump_log()
        sl.stop()
    sys.exit(1)


def cluster():
    """The fixture's cluster.env as a dict (PRIMARY_PORT, ...)."""
    path = os.environ.get("SLUICE_CLUSTER_ENV")
    if not path or not os.path.exists(path):
        fail("SLUICE_CLUSTER_ENV not set or missing (run through ctest)")
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                env[k] = v
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    """A sluice on free ports with trust auth and metrics_listen on."""

    def __init__(self, opts="", dbs=""):
        self.dir = tempfile.mkdtemp(prefix="sluice-py-")
        self.log = log_path(self.dir)
        self.port = free_port()
        self.mport = free_port()
        cl = cluster()
        ini = os.path.join(self.dir, "sluice.ini")
        with open(ini, "w") as f:
            f.write("[databases]\n"
                    f"sluice_test = host=127.0.0.1 port={cl['PRIMARY_PORT']}\n"
                    f"{dbs}\n"
                    "[sluice]\n"
                    "listen_addr = 127.0.0.1\n"
                    f"listen_port = {self.port}\n"
                    f"unix_socket_dir = {self.dir}\n"
                    f"logfile = {self.log}\n"
                    "auth_type = trust\n"
                    f"metrics_listen = 127.0.0.1:{self.mport}\n"
                    f"{test_workers(opts)}{opts}\n")
        self.proc = subprocess.Popen([os.environ["SLUICE_BIN"], ini])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.mport), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    fail(f"sluice exited at start ({self.proc.returncode})", self)
                time.sleep(0.05)
        fail("sluice did not accept within 10 s", self)

    def dsn(self, db="sluice_test", user="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user}"

    def get(self, path):
        """(status, body) of GET path on the metrics endpoint."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def scrape(self):
        """Samples of /metrics parsed by the Prometheus client's parser:
        {(name, frozenset(labels.items())): value}, and the families."""
        from prometheus_client.parser import text_string_to_metric_families
        status, text = self.get("/metrics")
        if status != 200:
            fail(f"/metrics answered {status}", self)
        samples, families = {}, []
        for fam in text_string_to_metric_families(text):
            families.append(fam)
            for s in fam.samples:
                key = (s.name, frozenset(s.labels.items()))
                if key in samples:
                    fail(f"sample {s.name} {s.labels} appears twice", self)
                samples[key] = s.value
        return samples, families

    def dump_log(self):
        try:
            with open(self.log) as f:
                sys.stderr.write("---- last lines of sluice's log ----\n")
                sys.stderr.writelines(f.readlines()[-40:])
        except OSError:
            pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self):
        """Stops sluice; a non-zero exit (a sanitizer's report, a crash)
        fails the test."""
        self.stop()
        rc = self.proc.returncode
        if rc != 0:
            self.dump_log()
            print(f"FAIL: sluice exited with status {rc} after SIGINT", file=sys.stderr)
            sys.exit(1)
        shutil.rmtree(self.dir, ignore_errors=True)


def value(samples, name, **labels):
    """The value of the sample with exactly these labels, or None."""
    return samples.get((name, frozenset(labels.items())))


def total(samples, name, **match):
    """Sum of the samples of name whose labels include match."""
    n = 0.0
    for (sname, labels), v in samples.items():
        if sname == name and all((k, w) in labels for k, w in match.items()):
            n += v
    return n
