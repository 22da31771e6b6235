#!/usr/bin/python3
"""A misbehaving PostgreSQL backend on loopback, for it_fault_backend.

Usage: fake_pg.py  (prints its port on stdout, serves until killed)

The database name of each login picks the fault:
  login_reset      resets the connection once the startup packet came
  login_garbage    answers the startup packet with random bytes
  login_stall      sends 3 bytes of an Authentication message, then nothing
  login_nocode     answers with an ErrorResponse without SQLSTATE (no C field)
  login_ps_nonul   logs in, with a ParameterStatus whose strings lack their NULs
  q_<fault>        logs in properly; a query containing 'fault' gets <fault>:
    q_reset        the connection reset
    q_garbage      random bytes (the first not a message type)
    q_stall        5 bytes of a RowDescription, then nothing
    q_nocode       ErrorResponse (ERROR) without SQLSTATE, then ReadyForQuery
    q_ps_nonul     ParameterStatus without NULs, then a normal reply
    q_cut          a RowDescription, then half a DataRow, then the close
    q_idle_fatal   a normal reply; after the next query (sluice's reset), a
                   FATAL while idle, the connection kept open 3 s, mute
Other queries get an empty SELECT reply (or EmptyQueryResponse), so that
sluice's own queries (checks, resets) pass.
"""
import os
import socket
import struct
import sys
import threading
import time


def msg(t, body):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def startup(sock):
    """Reads SSLRequest/GSSENCRequest (declined) and the startup packet;
    returns its parameters."""
    while True:
        n = struct.unpack("!I", read_exact(sock, 4))[0]
        body = read_exact(sock, n - 4)
        code = struct.unpack("!I", body[:4])[0]
        if code in (80877103, 80877104):
            sock.sendall(b"N")
            continue
        if code == 80877102:  # CancelRequest: nothing to cancel here
            raise EOFError
        parts = body[4:].split(b"\0")
        return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 2, 2)}


def login_ok(sock, ps_nonul=False):
    out = msg(b"R", struct.pack("!I", 0))
    for k, v in (("server_version", "15.0"), ("client_encoding", "UTF8"),
                 ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"),
                 ("standard_conforming_strings", "on"), ("TimeZone", "UTC"),
                 ("IntervalStyle", "postgres"), ("server_encoding", "UTF8")):
        out += msg(b"S", cstr(k) + cstr(v))
    if ps_nonul:
        out += msg(b"S", b"application_name")  # no NUL, no value
    out += msg(b"K", struct.pack("!II", os.getpid(), 42))
    out += msg(b"Z", b"I")
    sock.sendall(out)


def error(severity, text, code=None):
    body = b"S" + cstr(severity) + b"V" + cstr(severity)
    if code:
        body += b"C" + cstr(code)
    body += b"M" + cstr(text) + b"\0"
    return msg(b"E", body)


def row_description():
    return msg(b"T", struct.pack("!H", 1) + cstr("x") + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0))


def answer(sock, fault, sql):
    if "fault" not in sql or not fault:
        if not sql.strip():
            sock.sendall(msg(b"I", b"") + msg(b"Z", b"I"))
        else:
            sock.sendall(row_description() + msg(b"C", cstr("SELECT 0")) + msg(b"Z", b"I"))
        return True
    if fault == "reset":
        reset(sock)
        return False
    if fault == "garbage":
        # a type no backend sends, then noise
        sock.sendall(b"\x01" + os.urandom(255))
        return True
    if fault == "stall":
        sock.sendall(row_description()[:5])
        return True
    if fault == "nocode":
        sock.sendall(error("ERROR", "an error without SQLSTATE") + msg(b"Z", b"I"))
        return True
    if fault == "ps_nonul":
        sock.sendall(msg(b"S", b"TimeZone") + row_description() + msg(b"C", cstr("SELECT 0")) +
                     msg(b"Z", b"I"))
        return True
    if fault == "cut":
        row = struct.pack("!HI", 1, 90) + b"y" * 90
        sock.sendall(row_description() + msg(b"D", row)[:50])
        sock.close()
        return False
    raise ValueError(fault)


def serve(sock):
    try:
        params = startup(sock)
        db = params.get("database", "")
        if db == "login_reset":
            return reset(sock)
        if db == "login_garbage":
            sock.sendall(os.urandom(64))
        elif db == "login_stall":
            sock.sendall(b"R\0\0")
        elif db == "login_nocode":
            sock.sendall(error("FATAL", "a login error without SQLSTATE"))
            return sock.close()
        else:
            login_ok(sock, ps_nonul=db == "login_ps_nonul")
        fault = db[2:] if db.startswith("q_") else ""
        armed = False
        while True:
            t = read_exact(sock, 1)
            n = struct.unpack("!I", read_exact(sock, 4))[0]
            body = read_exact(sock, n - 4)
            if t == b"X":
                break
            sql = body[:-1].decode(errors="replace")
            if fault == "idle_fatal" and t == b"Q":
                answer(sock, "", sql)
                if "fault" in sql:
                    armed = True
                elif armed:
                    time.sleep(0.3)
                    sock.sendall(error("FATAL", "terminating connection due to administrator "
                                       "command", "57P01"))
                    time.sleep(3)  # open and mute: whatever comes is not answered
                    break
                continue
            if t == b"Q" and not answer(sock, fault, sql):
                return
    except (EOFError, OSError):
        pass
    try:
        sock.close()
    except OSError:
        pass


def main():
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    print(lsock.getsockname()[1], flush=True)
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
