#!/usr/bin/python3
"""No secret in any log: reads every file under LOG_DIR (the logs of every
sluice the test run started: tests/integration/harness.c and bench/soak.sh
put them there) and fails, listing file:line, when a line holds

  - a password the tests use (collected from the sources under tests/ and
    bench/: connection strings, CREATE ROLE ... PASSWORD, userlist lines);
  - an md5 password hash ("md5" and 32 hex digits: a stored hash or a
    client's md5 response), and the md5 hash of each test user's password;
  - a SCRAM secret: a stored verifier ("SCRAM-SHA-256$..."), a client proof
    ("p=...") or server signature ("v=..."), any 32-byte value in base64
    (the size of a proof, a signature and every SCRAM key), and, computed
    from the cluster's pg_authid and the test passwords, each user's
    StoredKey, ServerKey, ClientKey and SaltedPassword in base64 and hex.

  check_secrets.py LOG_DIR SOURCE_DIR [CLUSTER_ENV]

A password that is also a word of sluice's own sources ("wrong", "unused")
is left out (a log line may say it for another reason) and listed as such.
"""
import base64
import glob
import hashlib
import hmac
import os
import re
import subprocess
import sys

SOURCE_GLOBS = ("tests/**/*.c", "tests/**/*.py", "tests/**/*.sh", "tests/**/*.js", "bench/*.sh")

PASSWORD_PATTERNS = (
    re.compile(r"password=([^\s\"'\\%,]+)"),
    re.compile(r"PASSWORD '([^'%]+)'"),
    re.compile(r"PGPASSWORD=([^\s\"'%]+)"),
    re.compile(r'\\?"([A-Za-z_0-9]+)\\?" \\?"([^"\\%]+)\\?"'),
)
USER_PATTERNS = (
    re.compile(r"(?:CREATE|ALTER) (?:ROLE|USER) ([A-Za-z_0-9]+)"),
    re.compile(r"\buser=([A-Za-z_0-9]+)"),
    re.compile(r"-U ([A-Za-z_0-9]+)"),
    re.compile(r'\\?"([A-Za-z_0-9]+)\\?" \\?"'),
)

# Shapes no log line may have, whoever the user.
B64_32 = r"[A-Za-z0-9+/]{43}="
GENERIC = (
    ("md5 password hash", re.compile(r"md5[0-9a-f]{32}")),
    ("SCRAM verifier", re.compile(r"SCRAM-SHA-256\$")),
    ("SCRAM client proof", re.compile(r"(?<![A-Za-z0-9_])p=[A-Za-z0-9+/]{20,}")),
    ("SCRAM server signature", re.compile(r"(?<![A-Za-z0-9_])v=[A-Za-z0-9+/]{20,}")),
    ("32-byte base64 value (SCRAM proof, signature or key)",
     re.compile(r"(?<![A-Za-z0-9+/])" + B64_32 + r"(?![A-Za-z0-9+/=])")),
)


def sources(top):
    for pat in SOURCE_GLOBS:
        for path in glob.glob(os.path.join(top, pat), recursive=True):
            if os.path.basename(path) == "check_secrets.py":
                continue
            with open(path, errors="replace") as f:
                yield f.read()


def collect(top):
    """The test passwords and user names found in the sources."""
    passwords, users = set(), set()
    for text in sources(top):
        for pat in PASSWORD_PATTERNS:
            for m in pat.finditer(text):
                if pat.groups == 2:
                    users.add(m.group(1))
                passwords.add(m.group(pat.groups))
        for pat in USER_PATTERNS:
            users.update(m.group(1) for m in pat.finditer(text))
    # A stored hash in a userlist line is no password (it is caught below as
    # a hash), and a placeholder is none.
    passwords = {p for p in passwords
                 if len(p) >= 2 and not p.startswith(("md5", "SCRAM-SHA-256$"))}
    return passwords, users


def text_of_sluice(top):
    text = []
    for path in glob.glob(os.path.join(top, "src/**/*.[ch]"), recursive=True) + \
            glob.glob(os.path.join(top, "include/**/*.h"), recursive=True):
        with open(path, errors="replace") as f:
            text.append(f.read())
    return "\n".join(text)


def pg_authid(env_path):
    """(role, stored secret) of every role with a password, or [] if the
    cluster is not reachable."""
    env = {}
    try:
        with open(env_path) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v
    except OSError:
        return []
    out = subprocess.run(
        ["psql", "-X", "-At", "-F", " ", "-h", env.get("SOCKDIR", ""), "-p",
         env.get("PRIMARY_PORT", ""), "-U", "postgres", "-d", "postgres", "-c",
         "SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL"],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print("note: pg_authid not read (%s): the computed SCRAM keys are not checked"
              % out.stderr.strip(), file=sys.stderr)
        return []
    return [tuple(line.split(" ", 1)) for line in out.stdout.splitlines() if " " in line]


def scram_secrets(role, verifier, passwords):
    """The keys a verifier holds, and those derived from whichever test
    password matches it (SaltedPassword, ClientKey)."""
    m = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", verifier)
    if not m:
        return []
    iters, salt = int(m.group(1)), base64.b64decode(m.group(2))
    stored, server = base64.b64decode(m.group(3)), base64.b64decode(m.group(4))
    found = [("%s's SCRAM verifier" % role, verifier)]
    for name, key in (("StoredKey", stored), ("ServerKey", server)):
        found += [("%s's %s" % (role, name), base64.b64encode(key).decode()),
                  ("%s's %s (hex)" % (role, name), key.hex())]
    for pw in passwords:
        salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, iters)
        client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        if hashlib.sha256(client).digest() != stored:
            continue
        for name, key in (("ClientKey", client), ("SaltedPassword", salted)):
            found += [("%s's %s" % (role, name), base64.b64encode(key).decode()),
                      ("%s's %s (hex)" % (role, name), key.hex())]
    return found


def mask(s):
    return s[:3] + "..." if len(s) > 6 else "***"


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    log_dir, top = sys.argv[1], sys.argv[2]
    env_path = sys.argv[3] if len(sys.argv) > 3 else ""
    passwords, users = collect(top)
    own = text_of_sluice(top)
    skipped = sorted(p for p in passwords if re.search(r"\b%s\b" % re.escape(p), own))
    literal = [("test password", p) for p in sorted(passwords) if p not in skipped]
    for u in sorted(users):
        for p in sorted(passwords):
            h = "md5" + hashlib.md5((p + u).encode()).hexdigest()
            literal.append(("md5 hash of %s's password" % u, h))
    for role, secret in pg_authid(env_path):
        if secret.startswith("SCRAM-SHA-256$"):
            literal += scram_secrets(role, secret, passwords)
        else:
            literal.append(("%s's stored md5 hash" % role, secret))
    literal = [(k, s) for k, s in literal if s]
    logs = sorted(p for p in glob.glob(os.path.join(log_dir, "**"), recursive=True)
                  if os.path.isfile(p))
    hits, lines = [], 0
    # Passwords as whole tokens: "scram_pw" is in "scram_pw." but not in
    # "xscram_pwx" (no log line should hold either, but a token is what a
    # leak looks like and a substring of a word is not).
    literal_re = [(k, s, re.compile(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(s)))
                  for k, s in literal]
    for path in logs:
        with open(path, errors="replace") as f:
            for n, line in enumerate(f, 1):
                lines += 1
                for kind, s, pat in literal_re:
                    if s in line and pat.search(line):
                        hits.append("%s:%d: %s (%s)" % (path, n, kind, mask(s)))
                for kind, pat in GENERIC:
                    m = pat.search(line)
                    if m:
                        hits.append("%s:%d: %s (%s)" % (path, n, kind, mask(m.group(0))))
    print("check_secrets: %d log files, %d lines; %d test passwords, %d users, %d computed "
          "secrets, %d shapes" % (len(logs), lines, len(passwords) - len(skipped), len(users),
                                  len(literal) - len(passwords) + len(skipped), len(GENERIC)))
    if skipped:
        print("check_secrets: not searched (words of sluice's sources): %s" % ", ".join(skipped))
    if not logs:
        print("check_secrets: FAIL: no log in %s (the run wrote none: is SLUICE_TEST_LOG_DIR "
              "set?)" % log_dir)
        return 1
    for h in hits[:200]:
        print(h)
    if hits:
        print("check_secrets: FAIL: %d lines hold a secret (%d shown); a log line must never "
              "carry a password, hash, proof or key" % (len(hits), min(len(hits), 200)))
        return 1
    print("check_secrets: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
