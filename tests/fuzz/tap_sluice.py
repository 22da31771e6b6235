#!/usr/bin/python3
"""A stand-in for the sluice binary that records the traffic of an
integration test (tests/fuzz/make_corpus.sh sets SLUICE_BIN to it).

Started as `tap_sluice.py sluice.ini`, it rewrites the config so that
sluice listens on another port and reaches each [databases] backend
through a TCP tap of its own, puts a tap on the test's listen_port (and
metrics_listen) in front of sluice, runs the real sluice
($SLUICE_REAL_BIN) as its child, passes signals on to it and exits as it
did. Each tapped connection leaves two files in $SLUICE_TAP_DIR:
<pid>-<side>-<n>.c2s (what the connecting end sent) and .s2c (what it got),
side being client, backend or metrics. The config and the files it names
(auth_file, auth_hba_file) are copied there too. Any other command line
runs the real sluice as is."""
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

CAP = 256 * 1024  # bytes kept per direction of a connection


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Tap:
    """Listens on 127.0.0.1:port and forwards each connection to target
    (a (host, port) pair or a Unix socket path), recording both ways."""

    def __init__(self, port, target, side, out):
        self.target, self.side, self.out, self.n = target, side, out, 0
        if isinstance(port, str):  # a Unix socket path
            self.lsock = socket.socket(socket.AF_UNIX)
            self.lsock.bind(port)
        else:
            self.lsock = socket.socket()
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.lsock.accept()
            self.n += 1
            threading.Thread(target=self.pump, args=(c, self.n), daemon=True).start()

    def connect(self):
        if isinstance(self.target, str):
            u = socket.socket(socket.AF_UNIX)
        else:
            u = socket.socket()
        u.connect(self.target)
        return u

    def pump(self, c, n):
        try:
            u = self.connect()
        except OSError:
            c.close()
            return
        base = os.path.join(self.out, "%d-%s-%d" % (os.getpid(), self.side, n))
        rec = {c: bytearray(), u: bytearray()}
        peer = {c: u, u: c}
        try:
            while True:
                r, _, _ = select.select([c, u], [], [])
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise EOFError
                    if len(rec[s]) < CAP:
                        rec[s] += data[: CAP - len(rec[s])]
                    peer[s].sendall(data)
        except (EOFError, OSError):
            pass
        finally:
            c.close()
            u.close()
            if rec[c] or rec[u]:
                with open(base + ".c2s", "wb") as f:
                    f.write(rec[c])
                with open(base + ".s2c", "wb") as f:
                    f.write(rec[u])


def rewrite(text, out):
    """The config with taps in front of sluice and its backends."""
    lines, section, front = [], "", []
    for line in text.split("\n"):
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            section = m.group(1).lower()
        kv = re.match(r"\s*([\w*.\"-]+)\s*=\s*(.*)$", line)
        if kv and section == "sluice" and kv.group(1) == "listen_port":
            inner = free_port()
            front.append((int(kv.group(2)), ("127.0.0.1", inner), "client"))
            line = "listen_port = %d" % inner
        elif kv and section == "sluice" and kv.group(1) == "metrics_listen" and kv.group(2):
            host, port = kv.group(2).rsplit(":", 1)
            inner = free_port()
            front.append((int(port), ("127.0.0.1", inner), "metrics"))
            line = "metrics_listen = %s:%d" % (host, inner)
        elif kv and section == "databases":
            line = kv.group(1) + " = " + tap_backend(kv.group(2), out)
        lines.append(line)
    return "\n".join(lines), front


def tap_backend(conn, out):
    host = re.search(r"\bhost=(\S+)", conn)
    port = re.search(r"\bport=(\d+)", conn)
    if not host or "replicas=" in conn:
        return conn
    h, p = host.group(1), int(port.group(1)) if port else 5432
    target = "%s/.s.PGSQL.%d" % (h, p) if h.startswith("/") else (h, p)
    mine = free_port()
    Tap(mine, target, "backend", out)
    conn = re.sub(r"\bhost=\S+", "host=127.0.0.1", conn)
    if port:
        return re.sub(r"\bport=\d+", "port=%d" % mine, conn)
    return conn + " port=%d" % mine


def copy_files(ini, text, out):
    tag = "%d-" % os.getpid()
    shutil.copy(ini, os.path.join(out, tag + "sluice.ini"))
    for key, name in (("auth_file", "userlist.txt"), ("auth_hba_file", "hba.conf")):
        m = re.search(r"^\s*%s\s*=\s*(\S+)" % key, text, re.M)
        if m and os.path.isfile(m.group(1)):
            shutil.copy(m.group(1), os.path.join(out, tag + name))


def wait_listening(port, child):
    for _ in range(500):
        if child.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def die_with_parent():
    """sluice goes when this process does (a test may SIGKILL it)."""
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main():
    real = os.environ["SLUICE_REAL_BIN"]
    out = os.environ["SLUICE_TAP_DIR"]
    args = sys.argv[1:]
    if len(args) != 1 or not args[0].endswith(".ini"):
        os.execv(real, [real] + args)
    ini = args[0]
    text = open(ini).read()
    copy_files(ini, text, out)
    tapped, front = rewrite(text, out)
    path = ini[:-4] + ".tapped.ini"
    with open(path, "w") as f:
        f.write(tapped)
    child = subprocess.Popen([real, path], preexec_fn=die_with_parent)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    sockdir = re.search(r"^\s*unix_socket_dir\s*=\s*(\S+)", text, re.M)
    if sockdir:  # the same tap on sluice's Unix socket
        for port, target, side in list(front):
            if side == "client":
                front.append(("%s/.s.PGSQL.%d" % (sockdir.group(1), port),
                              "%s/.s.PGSQL.%d" % (sockdir.group(1), target[1]), side))
    inner = [t for t in front if t[2] == "client"]
    if inner and wait_listening(inner[0][1][1], child):
        for port, target, side in front:
            try:
                Tap(port, target, side, out)
            except OSError:
                pass
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    time.sleep(0.1)  # let the pumps write what they hold
    if rc < 0:
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    sys.exit(rc)


if __name__ == "__main__":
    main()
