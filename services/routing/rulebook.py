"""The rule book: the rules file in force at start and the rule sets posted through the API, picked by time."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg

from services.routing import store
from services.routing.rules import (
    DEFAULT_RULES_FILE,
    RulesError,
    RuleSet,
    load_default_rules,
    load_rules,
    rules_in_force,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


class RulesFileError(RuntimeError):
    """The rules file named by ROUTING_RULES cannot be read."""


# --- rule sets ----------------------------------------------------------------------------------------------



class RuleBook:
    """The base rule set (the rules file) and the sets posted through the API, picked by time (rules_in_force).

    Posted sets are immutable rows; each transaction that routes reads the versions it has not seen yet, so every
    replica routes with the same sets.
    """

    def __init__(self, base: RuleSet, source: str, text: str) -> None:
        self.base, self.source, self.text = base, source, text
        self.posted: dict[str, RuleSet] = {}
        self._unusable: set[str] = set()

    async def refresh(self, conn: asyncpg.Connection[Any]) -> None:
        for version, text in await store.rule_sets_except(conn, set(self.posted) | self._unusable):
            try:
                self.posted[version] = load_rules(text, source=f"rule set {version} (database)")
            except RulesError as exc:  # validated when posted; only a code change could make it fail now
                log.error(  # noqa: TRY400 - the problems are in the message; a traceback would add nothing
                    "stored rule set no longer loads; ignored", extra={"version": version, "error": str(exc)}
                )
                self._unusable.add(version)

    def in_force(self, at: datetime) -> RuleSet:
        return rules_in_force(self.base, self.posted.values(), at)

    async def current(self, conn: asyncpg.Connection[Any], at: datetime) -> RuleSet:
        await self.refresh(conn)
        return self.in_force(at)


def load_rule_book(settings: Settings) -> RuleBook:
    """The rules file in force at start: ROUTING_RULES, else the default. A broken file stops the service here, with
    every problem and its line in the message."""
    if settings.routing_rules is None:
        source = f"services/routing/{DEFAULT_RULES_FILE}"
        from importlib import resources

        text = resources.files("services.routing").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        return RuleBook(load_default_rules(), source, text)
    path = settings.routing_rules
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError(f"ROUTING_RULES={path}: cannot read the rules file: {exc}") from exc
    return RuleBook(load_rules(text, source=str(path)), str(path), text)

