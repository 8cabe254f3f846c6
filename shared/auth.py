"""Scoped API keys (contract section 4): a YAML file of SHA-256 digests with scopes; keys never stored in clear.

Scopes: `channel:<name>`, `department:<code>`, `reports`, `admin`. No key: 401. Wrong scope: 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

SCOPE_KINDS = ("channel", "department")
PLAIN_SCOPES = ("reports", "admin")


class KeysFileError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the scope of the key they presented."""

    scope: str

    @property
    def kind(self) -> str:
        return self.scope.split(":", 1)[0]

    @property
    def name(self) -> str | None:
        return self.scope.split(":", 1)[1] if ":" in self.scope else None

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def may_post_channel(self, channel: str) -> bool:
        return self.scope == f"channel:{channel}"

    def department(self) -> str | None:
        return self.name if self.kind == "department" else None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def validate_scope(scope: str) -> str:
    kind, _, name = scope.partition(":")
    if scope in PLAIN_SCOPES or (kind in SCOPE_KINDS and name):
        return scope
    raise KeysFileError(f"unknown scope {scope!r}: use channel:<name>, department:<code>, reports or admin")


class KeyRing:
    """Digest → scope. Comparison is by digest in constant time, so timing says nothing about keys."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries

    @classmethod
    def from_yaml(cls, text: str, source: str = "<keys>") -> KeyRing:
        try:
            data = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise KeysFileError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(data, list):
            raise KeysFileError(f"{source}: must be a list of {{sha256, scope}} entries")
        entries: dict[str, str] = {}
        for i, item in enumerate(data, 1):
            if not isinstance(item, dict) or not isinstance(item.get("sha256"), str) or "scope" not in item:
                raise KeysFileError(f"{source}: entry {i} needs `sha256` and `scope`")
            sha = item["sha256"].strip().lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise KeysFileError(f"{source}: entry {i}: sha256 must be 64 hex digits")
            entries[sha] = validate_scope(str(item["scope"]))
        return cls(entries)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        return cls.from_yaml(path.read_text(encoding="utf-8"), str(path))

    def authenticate(self, key: str) -> Principal | None:
        wanted = digest(key)
        found = None
        for sha, scope in self._entries.items():
            if hmac.compare_digest(sha, wanted):
                found = Principal(scope)
        return found


def new_key(scope: str) -> tuple[str, str]:
    """A fresh random key and the YAML line (digest and scope) to add to the keys file."""
    validate_scope(scope)
    key = "ck_" + secrets.token_urlsafe(32)
    return key, f'- sha256: "{digest(key)}"\n  scope: "{scope}"\n'
