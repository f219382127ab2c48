"""No secret-looking value is committed: keys, tokens and passwords come from the environment only."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "URL with a password": re.compile(r"[a-z+]+://[^/\s:@]+:(?!\$\{)[^/\s:@]{6,}@"),
    "assigned secret": re.compile(
        r"""(?i)\b(?:password|passwd|secret|api_?key|token)\w*\s*[:=]\s*["']([A-Za-z0-9+/_\-]{20,})["']"""
    ),
}
# Values that look like secrets on purpose: test fixtures' throwaway keys, documented placeholders.
ALLOWED = re.compile(r"(?i)test|example|change-?me|placeholder|dummy|bench|local|fake")


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    files = []
    for name in names.splitlines():
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 2_000_000 and b"\0" not in path.read_bytes()[:4096]:
            files.append(path)
    return files


def find_secrets(text: str) -> list[str]:
    """The secret-looking values in a text, each as "kind: value"."""
    found = []
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(match.lastindex or 0)
            if not ALLOWED.search(value):
                found.append(f"{kind}: {value[:12]}...")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    # assembled at run time, so this file itself holds nothing the scan below would find
    aws, pw, url = (
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "Zq8rT2vLm9Wx" + "Yp4NcB7dKs3H",
        "postgresql://mlflow:" + "hunter2abc@db/x",
    )
    planted = f'AWS_KEY = "{aws}"\npassword = "{pw}"\n{url}'
    kinds = {hit.split(":")[0] for hit in find_secrets(planted)}
    assert kinds == {"AWS access key id", "assigned secret", "URL with a password"}
    assert not find_secrets('api_key = "test-key-for-the-fixture-only"\nurl = "postgresql://u:${POSTGRES_PASSWORD}@db"')


def test_no_secret_is_committed() -> None:
    hits = {
        str(path.relative_to(ROOT)): found
        for path in _tracked_text_files()
        if (found := find_secrets(path.read_text(errors="replace")))
    }
    assert not hits, hits
