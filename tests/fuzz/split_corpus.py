#!/usr/bin/python3
"""Turns what tap_sluice.py recorded into seed corpora for the fuzz
targets (tests/fuzz/make_corpus.sh runs it):

  split_corpus.py TAPDIR CORPUSDIR

Each target's seeds go to CORPUSDIR/<target>/, named by a hash of their
content, in the input format its fuzz_<target>.c describes: startup
packets; client message streams after the startup; backend streams; the
SCRAM exchanges of both sides; md5 and cleartext password answers; SQL
texts of Query and Parse; console queries; metrics request heads; the
config files, their [sluice] key=value lines, auth_file and
auth_hba_file. Each target keeps at most LIMIT seeds of at most MAXLEN
bytes, the smallest distinct ones, which keeps every corpus well under
1 MB."""
import collections
import glob
import hashlib
import os
import re
import struct
import sys

LIMIT = 200
MAXLEN = 8192
CONSOLE_DBS = (b"pgbouncer", b"sluice")

seeds = collections.defaultdict(set)


def add(target, data):
    if data:
        seeds[target].add(bytes(data[:MAXLEN]))


def messages(buf, off=0):
    """Typed messages (type, body) of buf from off, up to a partial one."""
    while off + 5 <= len(buf):
        t = buf[off : off + 1]
        n = struct.unpack("!I", buf[off + 1 : off + 5])[0]
        if n < 4 or off + 1 + n > len(buf):
            return
        yield t, buf[off + 5 : off + 1 + n], off
        off += 1 + n


def startup_packets(buf):
    """The untyped packets at the start of a client stream: SSLRequest and
    GSSENCRequest (each answered by one byte), then a StartupMessage or a
    CancelRequest. Returns (packets, offset after them, encrypted?)."""
    off, out = 0, []
    while off + 8 <= len(buf):
        n, code = struct.unpack("!II", buf[off : off + 8])
        if n < 8 or n > 10240 or off + n > len(buf):
            break
        out.append(buf[off : off + n])
        off += n
        if code not in (80877103, 80877104):
            return out, off, False
    return out, off, True


def params(pkt):
    parts = pkt[8:].split(b"\0")
    return dict(zip(parts[0::2], parts[1::2]))


def client(c2s, s2c):
    pkts, off, stuck = startup_packets(c2s)
    for p in pkts:
        add("startup", p)
    # An 'S' answer to SSLRequest: the rest is TLS.
    if stuck or not pkts or (len(pkts) > 1 and s2c[:1] == b"S"):
        return
    su = params(pkts[-1])
    rest = c2s[off:]
    add("client_scan", b"\x00\x00" + rest)
    add("client_scan", bytes([7, 1]) + rest)
    console = su.get(b"database") in CONSOLE_DBS
    user = su.get(b"user", b"")
    if not console:
        relay(rest)
    # What the server asked for decides what a 'p' message is.
    asked = [struct.unpack("!I", b[:4])[0] for t, b, _ in messages(s2c, s2c.find(b"R")) if t == b"R" and len(b) >= 4]
    ps = [b for t, b, _ in messages(rest) if t == b"p"]
    if 10 in asked and len(ps) >= 2:
        z = ps[0].find(b"\0")
        first = ps[0][z + 5 :] if z >= 0 else b""
        add("scram", b"\x00" + struct.pack("!H", len(first)) + first + ps[1])
    elif ps and (5 in asked or 3 in asked):
        how = 1 if 5 in asked else 0
        add("md5", bytes([how | 2]) + user + b"\0md5a3556571e93b0d20722ba62be61e8c2d\0" + ps[0])
        add("md5", bytes([how | 2]) + user + b"\0secret\0" + ps[0])
    for t, b, _ in messages(rest):
        if t == b"Q":
            q = b.rstrip(b"\0")
            if console:
                add("console", b"\x01" + q)
                add("console", b"\x00" + q)
            else:
                add("sql", q)
        elif t == b"P" and not console:
            z = b.find(b"\0")
            if z >= 0:
                add("sql", b[z + 1 :].split(b"\0")[0])


def relay(rest):
    """The client's messages as fuzz_relay.c's operations (one framed
    message each, up to the Terminate), in session and transaction
    pooling with prepared statements tracked, an empty server script."""
    ops = b""
    for t, b, _ in messages(rest):
        if t == b"X":
            ops += b"\x07\x00"
            break
        if t == b"p" or len(b) + 1 > 255:
            continue
        ops += bytes([1, len(b) + 1]) + t + b
        if len(ops) > 4096:
            break
    if ops:
        add("relay", b"\x00\x00\x00" + ops)
        add("relay", b"\x05\x00\x00" + ops)


def backend(c2s, s2c):
    if c2s[4:8] == struct.pack("!I", 80877103) and s2c[:1] == b"S":
        return  # TLS to the backend
    if c2s[4:8] == struct.pack("!I", 80877103):
        s2c = s2c[1:]  # the 'N' answer
    # No script (prepare.c's ring empty), then an md5 hash and SCRAM keys.
    add("backend", b"\x03\x00" + s2c)
    r = [b for t, b, _ in messages(s2c) if t == b"R" and len(b) >= 4]
    cont = [b[4:] for b in r if struct.unpack("!I", b[:4])[0] == 11]
    final = [b[4:] for b in r if struct.unpack("!I", b[:4])[0] == 12]
    if cont:
        sf = cont[0]
        add("scram", b"\x01" + struct.pack("!H", len(sf)) + sf + (final[0] if final else b""))


def files(tapdir):
    for p in glob.glob(os.path.join(tapdir, "*-sluice.ini")):
        text = open(p, "rb").read()
        add("ini", text)
        section = b""
        for line in text.split(b"\n"):
            m = re.match(rb"\s*\[(\w+)\]", line)
            if m:
                section = m.group(1).lower()
            kv = re.match(rb"\s*(\w+)\s*=\s*(.*?)\s*$", line)
            if kv and section == b"sluice":
                add("ini_value", kv.group(1) + b"=" + kv.group(2))
    for p in glob.glob(os.path.join(tapdir, "*-userlist.txt")):
        add("userlist", open(p, "rb").read())
    for p in glob.glob(os.path.join(tapdir, "*-hba.conf")):
        for pick, who in ((1, b"sluice_test postgres"), (0x85, b"app alice")):
            add("hba", bytes([pick]) + who + b"\n" + open(p, "rb").read())


def main():
    tapdir, outdir = sys.argv[1], sys.argv[2]
    for c2s_path in sorted(glob.glob(os.path.join(tapdir, "*.c2s"))):
        c2s = open(c2s_path, "rb").read()
        s2c = open(c2s_path[:-4] + ".s2c", "rb").read()
        side = c2s_path.split("-")[-2]
        if side == "client":
            client(c2s, s2c)
        elif side == "backend":
            backend(c2s, s2c)
        elif side == "metrics":
            add("http", c2s)
    files(tapdir)
    for target, found in sorted(seeds.items()):
        keep = sorted(found, key=lambda d: (len(d), d))[:LIMIT]
        d = os.path.join(outdir, target)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "cap-*")):
            os.remove(old)
        for data in keep:
            name = "cap-" + hashlib.sha1(data).hexdigest()[:16]
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%-12s %4d seeds (%d distinct captured)" % (target, len(keep), len(found)))


if __name__ == "__main__":
    main()
