"""Redaction: the one place that decides what a credential looks like, so that none reaches a
recorded config, a failure row, a message or a log line.

- `redact_url`: a URL's userinfo (`https://user:secret@host` -> `https://REDACTED@host`) and the
  values of its secret query (and fragment) parameters; `{key}`-style placeholders are kept, as
  they name where a secret goes, not the secret.
- `redact_text`: the same forms inside free text (an exception quoting a URL, an answer body
  echoing the request, a library's debug line), plus `Authorization`-style headers (`Bearer`,
  `Basic`, `OAuth`), `--name=value` / `--name value` options whose name says token, secret,
  password, key, credential..., and every secret value this process has resolved
  (`register_secret`: env var, `<VAR>_FILE`, Secret Manager, a URL's inline credentials).
- `redact_beam_args`: Beam pipeline options as recorded (`--s3_secret_access_key`,
  `--s3_session_token`, `--azure_connection_string`, `--s3_access_key_id`, any made-up
  `--*_token`; any value that is a URL with credentials).

The workers get the real values (the in-memory BuildConfig); only what is written or logged
goes through here.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Sequence
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "REDACTED"
# Query parameter names that always hold a credential (the provider APIs': Google `key`,
# `signature`, `client`; Mapbox `access_token`; ...). Names of other shapes are judged by
# `is_secret_name` below.
SECRET_PARAMS = frozenset({"key", "signature", "client", "access_token", "token", "apikey", "api_key"})
# Words that, as a component of a name (snake, kebab, dotted or camel case), say it holds a
# credential. `tokens` (max_tokens, prompt_tokens) counts things and is deliberately not one.
_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential", "credentials", "signature", "sig", "auth", "sas"}
)
# ...unless the name only says where a secret comes from: `api_key_env`, `--llm-key-env`.
_NAMING_SUFFIXES = frozenset({"env", "file"})
_PLACEHOLDER = re.compile(r"\{[A-Za-z_-]*\}")  # {key}: substituted on the worker
_MIN_REGISTERED = 6  # shorter "secrets" (test stubs like "k") would redact ordinary words


def is_secret_name(name: str) -> bool:
    """Whether a query parameter, option or field called `name` holds a credential."""
    plain = name.strip().lstrip("-")
    if plain.lower() in SECRET_PARAMS:
        return True
    words = [w.lower() for w in re.split(r"[_.\-\s]+|(?<=[a-z0-9])(?=[A-Z])", plain) if w]
    if not words or words[-1] in _NAMING_SUFFIXES:
        return False
    joined = "_".join(words)
    return bool(_SECRET_WORDS.intersection(words)) or "connection_string" in joined or "access_key" in joined


# -- values this process knows to be secret ------------------------------------------------------

_lock = threading.Lock()
_values: set[str] = set()
_values_re: re.Pattern | None = None


def register_secret(value: str) -> None:
    """Remember a secret value so `redact_text` hides it wherever it turns up (a server echoing
    it in an error body, a library quoting it). Values under 6 characters are ignored."""
    global _values_re
    value = (value or "").strip()
    if len(value) < _MIN_REGISTERED or value in _values:
        return
    with _lock:
        _values.add(value)
        _values_re = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))


def register_url_secrets(*urls: str | None) -> None:
    """Register the inline credentials of URLs (userinfo, secret query values) the worker uses."""
    for url in urls:
        for value in url_secrets(url or ""):
            register_secret(value)


def url_secrets(url: str) -> list[str]:
    """The credential values written inline in a URL: its userinfo (and password alone) and its
    secret query/fragment values that are not `{key}` placeholders."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        out += [userinfo, unquote_plus(userinfo)]
        if ":" in userinfo:
            out.append(unquote_plus(userinfo.partition(":")[2]))
    for piece in re.split(r"[&;]", parts.query) + re.split(r"[&;]", parts.fragment):
        name, sep, value = piece.partition("=")
        if sep and value and is_secret_name(unquote_plus(name)) and not _PLACEHOLDER.fullmatch(value):
            out += [value, unquote_plus(value)]
    return [v for v in dict.fromkeys(out) if v]


# -- URLs --------------------------------------------------------------------------------------------


def _redact_pairs(query: str) -> str:
    pieces = []
    for piece in query.split("&"):
        name, sep, value = piece.partition("=")
        if sep and value and is_secret_name(unquote_plus(name)) and not _PLACEHOLDER.fullmatch(value):
            piece = f"{name}={REDACTED}"
        pieces.append(piece)
    return "&".join(pieces)


def redact_url(url: str) -> str:
    """The URL with its userinfo and secret query/fragment values replaced, safe for messages,
    logs and the recorded config. A URL with nothing to hide comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL (a bad IPv6 literal): redact it as text
        return redact_text(url)
    netloc = f"{REDACTED}@{parts.netloc.rpartition('@')[2]}" if "@" in parts.netloc else parts.netloc
    query, fragment = _redact_pairs(parts.query), _redact_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def has_inline_credentials(url: str) -> bool:
    """A URL carrying a credential itself (userinfo, a secret query value), not a `{key}` slot."""
    return bool(url_secrets(url))


# -- free text -----------------------------------------------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)[^\s/?#@'\"<>]+@")
# name=value pairs (query strings, `--option=value`). Names and schemes are bounded so that a long
# run of name characters (a DEBUG line quoting bytes) costs linear time, not quadratic.
_PAIR = re.compile(r"(?<![A-Za-z0-9_.-])(-{0,2}[A-Za-z][A-Za-z0-9_.-]{0,63})=([^&;\s'\"]+)")
# `--option value` and its list repr `'--option', 'value'` (Beam's "Discarding unparseable args")
_OPTION_SPACED = re.compile(r"(--[A-Za-z][A-Za-z0-9_.-]{0,63})(\s+|(['\"]),\s*['\"])(?!-)([^\s'\"]+)")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|oauth|digest)\s+[A-Za-z0-9._~+/|=:-]{8,}")
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|x-amz-security-token)(['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n,}]+)"
)
_RESOURCE_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=)?projects/[^/\s]+/secrets/")  # names a secret, holds none


def _pair(m: re.Match) -> str:
    name, value = m.group(1), m.group(2)
    if not is_secret_name(name) or _PLACEHOLDER.fullmatch(value) or _RESOURCE_NAME.match(value) or value == REDACTED:
        return m.group(0)
    return f"{name}={REDACTED}"


def _spaced(m: re.Match) -> str:
    option, sep, value = m.group(1), m.group(2), m.group(4)
    if not is_secret_name(option) or _RESOURCE_NAME.match(value) or value == REDACTED:
        return m.group(0)
    return f"{option}{sep}{REDACTED}"


def redact_text(text: str) -> str:
    """Credentials inside free text redacted: known secret values, URL userinfo, secret
    `name=value` pairs and options, Authorization headers and their schemes' credentials."""
    if not text:
        return text
    pattern = _values_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _PAIR.sub(_pair, text)
    return _OPTION_SPACED.sub(_spaced, text)


# -- structures: the recorded config, Beam options -------------------------------------------------------


def redact_beam_args(args: Sequence[str]) -> tuple[str, ...]:
    """Beam pipeline options as recorded: the value of every option whose name says it holds a
    credential (`--s3_secret_access_key=...`, `--s3_session_token ...`, `--azure_connection_string`,
    a made-up `--some_token`) and the credentials of any URL value, redacted. Flags are kept."""
    out: list[str] = []
    value_of_secret = False
    for arg in args:
        if value_of_secret and not arg.startswith("-"):
            out.append(REDACTED)
            value_of_secret = False
            continue
        value_of_secret = False
        name, sep, value = arg.partition("=")
        if arg.startswith("-") and is_secret_name(name):
            if sep:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(arg)
                value_of_secret = True  # `--name value`: the next argument, unless it is another option
            continue
        out.append(f"{name}={redact_url(value)}" if sep and "://" in value else redact_url(arg) if "://" in arg else redact_text(arg))
    return tuple(out)


def redact_urls_in(obj: Any) -> Any:
    """A JSON-like structure with every string that is a URL redacted (`redact_url`)."""
    if isinstance(obj, dict):
        return {k: redact_urls_in(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_urls_in(v) for v in obj)
    if isinstance(obj, str) and "://" in obj:
        return redact_url(obj)
    return obj


def inline_credential_fields(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of the strings in a JSON-like structure that are URLs with inline credentials."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in inline_credential_fields(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in inline_credential_fields(v, f"{path}[{i}]")]
    if isinstance(obj, str) and "://" in obj and has_inline_credentials(obj):
        return [path]
    return []


def registered_count() -> int:
    """How many secret values this process knows (tests)."""
    return len(_values)


def _clear_registered() -> None:
    """Forget registered values (tests)."""
    global _values_re
    with _lock:
        _values.clear()
        _values_re = None


