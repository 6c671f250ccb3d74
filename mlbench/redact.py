"""Scrub credentials out of error text before it is stored in results or printed.

A vendor's error body may echo the request it refused, `Authorization` header included; that
text becomes an error row in `predictions.csv` / `throughput.csv` and the one-line error on the
console. Every such place passes the text through `scrub` (the HTTP path already scrubs a body
before cutting it to a snippet, so a token cut in half never survives either). Removed:

- the value of any `Authorization` / `Proxy-Authorization` header, however it is quoted;
- bearer tokens (`Bearer <token>`) anywhere, and token shapes that are secrets on their own
  (Hugging Face `hf_...`, Google `ya29....`, JSON Web Tokens);
- the values of secret environment variables (`HF_TOKEN`, `NYCKEL_CLIENT_SECRET`,
  `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and any variable named like a token, secret,
  password or API key), as they are and URL-encoded;
- secrets a service obtained at run time and handed to `remember` (an OAuth access token, the
  AWS keys boto3 found in a shared credentials file).
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import quote

MASK = "[REDACTED]"
#: Environment variables whose values are secrets whatever their name says.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "NYCKEL_CLIENT_SECRET",
              "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN")
#: ... and any variable whose name says it holds one.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY", re.I)
#: A value shorter than this is not treated as a secret: replacing "1" or "true" everywhere
#: would garble messages, and no real credential is that short.
MIN_SECRET_LEN = 8

_PATTERNS = (
    # Authorization: <scheme> <value>  /  "authorization": "<scheme> <value>"  (header echoes)
    (re.compile(r"""((?:proxy-)?authorization["']?\s*[:=]\s*["']?)"""
                r"""(?:(?:bearer|basic|token|digest|aws4-hmac-sha256)\s+)?[^"'\r\n}]+""",
                re.I), rf"\g<1>{MASK}"),
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]+", re.I), rf"\g<1> {MASK}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), MASK),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]{8,}"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), MASK),
)

_remembered: set[str] = set()
_lock = threading.Lock()


def remember(*secrets: str | None) -> None:
    """Scrub these values too from now on (credentials a service got at run time)."""
    with _lock:
        _remembered.update(s for s in secrets if s and len(s) >= MIN_SECRET_LEN)


def secret_values() -> list[str]:
    """Every secret value to scrub right now, longest first (so no shorter one splits it)."""
    found = {v.strip() for k, v in os.environ.items()
             if (k in SECRET_ENV or _SECRET_NAME.search(k)) and len(v.strip()) >= MIN_SECRET_LEN}
    with _lock:
        found |= _remembered
    variants = found | {quote(v, safe="") for v in found}
    return sorted(variants, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` without credentials (see the module docstring)."""
    if not text:
        return text
    for value in secret_values():
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
