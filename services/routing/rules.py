"""Routing rules (派单规则, contract 6.1): a versioned YAML rule set, validated strictly, and the pure
placement of a complaint on a lead department (主办) with assisting ones (协办).

No I/O but `load_default_rules` (which reads the file shipped beside this module) and no clock: the time
at which a rule set is chosen is an argument of `select_rules`.

The file::

    version: "2026.1"                       # a string; quote it (a bare 2026.10 would read as 2026.1)
    effective_from: "2026-01-01T00:00:00+08:00"   # RFC 3339 with an offset
    rules:                                  # tried in order; the first that fits places the complaint
      - id: territorial-county              # stable, lower-case words joined by hyphens
        description: 属地管理               # optional; opens the reason sentence
        match:                              # optional; absent or empty matches every complaint
          categories: [financing, ...]      # absent or empty: any category
          region_level: county              # city | county | any (default any)
          regions: ["150523"]               # optional: only these division codes
        assign:
          lead: gov-{region_code}           # a department code, or this template
          assisting: ["{sector}"]           # department codes, gov-{region_code}, {sector}
          level: county                     # county when a county government leads, else city

Templates:
- `gov-{region_code}` is the county-level government of the complaint's division (开鲁县 150523 gives
  `gov-150523`). Only a rule that matches county-level divisions alone may use it, so it always names a
  real government.
- `{sector}` (in `assisting` only) is the city department that leads on the complaint's category, with
  the departments assisting it there: the first rule of the set that names the category, leads with a city
  department (not triage) and is not limited to counties or to given regions. One source of truth: the
  territorial rule's assisting departments follow the sector rules. A rule using it must list its
  categories, and every one of them must have such a sector rule.

Choices where the contract is silent (kept in the default file, documented there too):
- A county-level complaint of `policy_fulfillment` or `government_integrity` gets both city departments
  assisting: the one that leads on the category at city level (fgw, gxj) and the one assisting it (czj).
- `other` goes to triage in a county as well: the contract says "other ... goes to triage" without a
  territorial exception, and a county government cannot be told what an unclassified complaint is about.
- The city-only categories (corruption, judicial, taxes_fees) never fall through to a county government
  after their city department returns the case: the territorial rule lists its categories and leaves them
  out, so such a return ends at triage. A county government may itself be what a corruption complaint is
  about.
- After a return, departments in `exclude` are passed over as lead and also dropped from the assisting
  departments: a department that said "not ours" is not made to assist either.
- The last rule must be `fallback-triage`, matching every complaint and leading to triage, so that every
  complaint lands somewhere and reports can count the fallback by a stable rule id. If even it is
  excluded, the decision is still triage under `fallback-triage`: the desk is the end of the line.
- `level` must agree with the lead (county for a county government, city otherwise) so that an event can
  never say a city bureau handles a case at county level.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shared.domain import (
    CATEGORY_LABELS,
    CITY_CODE,
    DEPARTMENTS,
    REGIONS,
    Category,
    is_county_level,
    is_department,
)
from shared.events import ComplaintReceived

GOV_TEMPLATE: Final = "gov-{region_code}"
SECTOR_TEMPLATE: Final = "{sector}"
TRIAGE: Final = "triage"
FALLBACK_RULE_ID: Final = "fallback-triage"
MANUAL_RULE_ID: Final = "manual"
"""rule_id of an assignment made by the triage desk by hand (contract 3.2)."""
DEFAULT_RULES_FILE: Final = "rules.default.yaml"

Level = Literal["city", "county"]
RegionLevel = Literal["city", "county", "any"]
Loc = tuple[int | str, ...]

# Validation context flag: load_rules runs the whole-set checks itself, to name the line of each problem.
_DEFER_SET_CHECKS: Final = "defer_set_checks"

_CITY_DEPARTMENTS: Final = tuple(code for code in DEPARTMENTS if not code.startswith("gov-"))


class RulesError(ValueError):
    """A rules file that cannot be used; each problem names the file and the line of the bad entry."""

    def __init__(self, source: str, problems: Sequence[RuleProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}:{problem}" for problem in self.problems))


@dataclass(frozen=True)
class RuleProblem:
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.where}: {self.message}" if self.where else f"{self.line}: {self.message}"


class NoRulesInForceError(LookupError):
    """No rule set takes effect at the time asked for (or two different ones take effect at once)."""


# --- field types ----------------------------------------------------------------------------------


def _version(value: Any) -> Any:
    if isinstance(value, bool | float):
        # A bare 2026.10 is the float 2026.1: refuse it rather than silently rename a version.
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError (not TypeError) as a validation error
            f"write the version as a quoted string: the bare number {value!r} may have lost digits "
            "(2026.10 reads as 2026.1)"
        )
    if isinstance(value, int):
        return str(value)
    return value


def _rule_id(value: str) -> str:
    parts = value.split("-")
    if not value or len(value) > 64 or not all(part and part.isascii() and part.isalnum() for part in parts):
        raise ValueError(f"rule id {value!r} must be lower-case words joined by hyphens, e.g. territorial-county")
    if value != value.lower():
        raise ValueError(f"rule id {value!r} must be lower case")
    return value


def _department_list() -> str:
    return f"{', '.join(_CITY_DEPARTMENTS)}, gov-<county code> (e.g. gov-150523)"


def _lead_ref(value: str) -> str:
    if value == GOV_TEMPLATE or is_department(value):
        return value
    raise ValueError(f"unknown department {value!r}: use one of {_department_list()} or the template {GOV_TEMPLATE}")


def _assisting_ref(value: str) -> str:
    if value in (GOV_TEMPLATE, SECTOR_TEMPLATE) or is_department(value):
        return value
    raise ValueError(
        f"unknown department {value!r}: use one of {_department_list()} or the templates {GOV_TEMPLATE}, "
        f"{SECTOR_TEMPLATE}"
    )


def _region_code_text(value: Any) -> Any:
    # YAML reads an unquoted 150523 as a number.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _region_code(value: str) -> str:
    if value not in REGIONS:
        raise ValueError(f"unknown division code {value!r}: use one of {', '.join(REGIONS)}")
    return value


Version = Annotated[str, BeforeValidator(_version), Field(min_length=1, max_length=64)]
RuleId = Annotated[str, AfterValidator(_rule_id)]
LeadRef = Annotated[str, AfterValidator(_lead_ref)]
AssistingRef = Annotated[str, AfterValidator(_assisting_ref)]
RegionCode = Annotated[str, BeforeValidator(_region_code_text), AfterValidator(_region_code)]


def _is_county_government(code: str) -> bool:
    return code == GOV_TEMPLATE or code.startswith("gov-")


# --- the rule set ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleMatch(_Strict):
    """What a rule fits; every condition given must hold."""

    categories: tuple[Category, ...] = Field(default=(), description="Empty: any category.")
    region_level: RegionLevel = Field(
        default="any", description="county: a county-level division; city: the city or an unknown code."
    )
    regions: tuple[RegionCode, ...] = Field(default=(), description="Empty: any division.")

    def fits(self, category: Category, region_code: str) -> bool:
        if self.categories and category not in self.categories:
            return False
        if self.regions and region_code not in self.regions:
            return False
        if self.region_level == "any":
            return True
        return (self.region_level == "county") == is_county_level(region_code)

    @property
    def fits_everything(self) -> bool:
        return not self.categories and not self.regions and self.region_level == "any"

    @property
    def county_only(self) -> bool:
        return self.region_level == "county" or (
            bool(self.regions) and all(is_county_level(code) for code in self.regions)
        )


class RuleAssign(_Strict):
    """Where a rule sends what it fits."""

    lead: LeadRef = Field(description=f"Department code or {GOV_TEMPLATE}.")
    assisting: tuple[AssistingRef, ...] = Field(default=(), description="Codes or templates; never the lead.")
    level: Level

    @model_validator(mode="after")
    def _consistent(self) -> RuleAssign:
        if _is_county_government(self.lead) != (self.level == "county"):
            raise ValueError(
                f"level {self.level!r} does not fit lead {self.lead!r}: "
                "a county government leads at level county, every other department at level city"
            )
        if self.lead in self.assisting:
            raise ValueError(f"the lead {self.lead!r} cannot also assist")
        if len(set(self.assisting)) != len(self.assisting):
            raise ValueError("a department is listed twice in assisting")
        return self


class Rule(_Strict):
    id: RuleId = Field(description="Stable and human-meaningful, e.g. territorial-county; kept on each case.")
    description: str | None = Field(default=None, max_length=200, description="Opens the reason sentence.")
    match: RuleMatch = Field(default_factory=RuleMatch)
    assign: RuleAssign

    @model_validator(mode="after")
    def _templates_fit(self) -> Rule:
        if GOV_TEMPLATE in (self.assign.lead, *self.assign.assisting) and not self.match.county_only:
            raise ValueError(
                f"{GOV_TEMPLATE} needs a rule that fits county-level divisions only "
                "(region_level: county, or regions that are all county level)"
            )
        if SECTOR_TEMPLATE in self.assign.assisting and not self.match.categories:
            raise ValueError(f"{SECTOR_TEMPLATE} needs the rule to list its categories")
        return self


class RuleSet(_Strict):
    """One version of the routing policy, in force from `effective_from`."""

    version: Version
    effective_from: AwareDatetime
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _whole_set(self, info: ValidationInfo) -> RuleSet:
        if info.context and info.context.get(_DEFER_SET_CHECKS):
            return self
        problems = _set_problems(self)
        if problems:
            raise ValueError("; ".join(f"{_loc_text(loc)}: {message}" for loc, message in problems))
        return self

    @property
    def fallback(self) -> Rule:
        return self.rules[-1]


def _sector_departments(rules: Sequence[Rule], category: Category) -> tuple[str, ...] | None:
    """The city department leading on a category, then those assisting it (see `{sector}` above)."""
    for rule in rules:
        assign = rule.assign
        if (
            category in rule.match.categories
            and rule.match.region_level != "county"
            and not rule.match.regions
            and assign.level == "city"
            and assign.lead != TRIAGE
        ):
            return (assign.lead, *(code for code in assign.assisting if is_department(code)))
    return None


def _set_problems(rule_set: RuleSet) -> list[tuple[Loc, str]]:
    """Checks that need the whole set: unique ids, a fallback, `{sector}` resolvable."""
    problems: list[tuple[Loc, str]] = []
    first_index: dict[str, int] = {}
    for index, rule in enumerate(rule_set.rules):
        if rule.id in first_index:
            problems.append(
                (
                    ("rules", index, "id"),
                    f"duplicate rule id {rule.id!r} (also rules[{first_index[rule.id]}])",
                )
            )
        else:
            first_index[rule.id] = index
        if SECTOR_TEMPLATE in rule.assign.assisting:
            for category in rule.match.categories:
                if _sector_departments(rule_set.rules, category) is None:
                    problems.append(
                        (
                            ("rules", index, "assign", "assisting"),
                            f"{SECTOR_TEMPLATE} finds no city department leading on {category.value}: "
                            "add a rule that names the category and leads with a city department",
                        )
                    )
    last_index = len(rule_set.rules) - 1
    last = rule_set.rules[last_index]
    fallback_at = first_index.get(FALLBACK_RULE_ID)
    if fallback_at is not None and fallback_at != last_index:
        problems.append(
            (
                ("rules", fallback_at, "id"),
                f"{FALLBACK_RULE_ID} must be the last rule: later rules never apply",
            )
        )
    elif last.id != FALLBACK_RULE_ID:
        problems.append(
            (
                ("rules", last_index),
                f"no fallback rule: the last rule must be {FALLBACK_RULE_ID!r}, fitting every complaint "
                f"and leading to {TRIAGE}",
            )
        )
    else:
        if not last.match.fits_everything:
            problems.append(
                (("rules", last_index, "match"), f"{FALLBACK_RULE_ID} must fit every complaint: drop match")
            )
        if last.assign.lead != TRIAGE or last.assign.assisting:
            problems.append(
                (("rules", last_index, "assign"), f"{FALLBACK_RULE_ID} must lead to {TRIAGE}, no assisting")
            )
    return problems


# --- loading --------------------------------------------------------------------------------------

_KEYS_AT: Final[dict[int, tuple[str, ...]]] = {
    1: tuple(RuleSet.model_fields),
    3: tuple(Rule.model_fields),
}
_KEYS_UNDER: Final[dict[str, tuple[str, ...]]] = {
    "match": tuple(RuleMatch.model_fields),
    "assign": tuple(RuleAssign.model_fields),
}


def _loc_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _line_of(root: Node, loc: Loc) -> int:
    """1-based line of the deepest YAML node the location reaches (a key's own line for a mapping entry)."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == str(part):
                    node, line = value, key.start_mark.line
                    break
            else:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _duplicate_keys(node: Node, path: Loc = ()) -> list[RuleProblem]:
    # PyYAML keeps the last of two equal keys silently; a rules file that says a thing twice is refused.
    problems: list[RuleProblem] = []
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None and name in seen:
                line = key.start_mark.line + 1
                problems.append(RuleProblem(line, _loc_text(path), f"duplicate key {name!r}"))
            if name is not None:
                seen.add(name)
            problems += _duplicate_keys(value, (*path, name if name is not None else "?"))
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, index))
    return problems


def _error_message(error: Any) -> str:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _KEYS_UNDER.get(str(parent[-1])) if parent else _KEYS_AT[1]
        if allowed is None:
            allowed = _KEYS_AT.get(len(loc))
        known = f" (known: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {loc[-1]!r}{known}"
    if kind == "missing":
        return f"missing key {loc[-1]!r}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in ("enum", "literal_error"):
        what = "category" if "categories" in loc else str(loc[-1])
        return f"unknown {what} {error['input']!r}: expected {error['ctx']['expected']}"
    if kind == "too_short" and loc == ("rules",):
        return "a rule set needs at least its fallback rule"
    if kind == "timezone_aware":
        return "needs a UTC offset, e.g. 2026-01-01T00:00:00+08:00"
    if kind == "model_type" and not loc:
        return "a rules file is a mapping with version, effective_from and rules"
    return str(error["msg"])


def _yaml_line(exc: yaml.YAMLError, text: str) -> int:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return mark.line + 1 if mark is not None else 1
    if isinstance(exc, yaml.reader.ReaderError):
        return text.count("\n", 0, exc.position) + 1
    return 1


def load_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rules file; RulesError names `source` and the line of every bad entry."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            empty = RuleProblem(1, "", "empty rules file: expected version, effective_from and rules")
            raise RulesError(source, [empty])
        duplicates = _duplicate_keys(root)
        if duplicates:
            raise RulesError(source, duplicates)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
        problem = "; ".join(part for part in parts if part) or str(exc)
        broken = RuleProblem(_yaml_line(exc, text), "", f"invalid YAML: {problem}")
        raise RulesError(source, [broken]) from None
    finally:
        loader.dispose()
    try:
        rule_set = RuleSet.model_validate(data, context={_DEFER_SET_CHECKS: True})
    except ValidationError as exc:
        errors = [(tuple(error["loc"]), _error_message(error)) for error in exc.errors()]
        raise RulesError(
            source, [RuleProblem(_line_of(root, loc), _loc_text(loc), msg) for loc, msg in errors]
        ) from None
    problems = _set_problems(rule_set)
    if problems:
        raise RulesError(source, [RuleProblem(_line_of(root, loc), _loc_text(loc), m) for loc, m in problems])
    return rule_set


def load_default_rules() -> RuleSet:
    """The policy of contract 6.1, as shipped beside this module."""
    resource = importlib.resources.files("services.routing").joinpath(DEFAULT_RULES_FILE)
    return load_rules(resource.read_text(encoding="utf-8"), source=f"services/routing/{DEFAULT_RULES_FILE}")


def select_rules(sets: Iterable[RuleSet], at: datetime) -> RuleSet:
    """The rule set in force at `at`: the latest `effective_from` not after it."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("select_rules needs a time with a UTC offset")
    in_force = [rule_set for rule_set in sets if rule_set.effective_from <= at]
    if not in_force:
        raise NoRulesInForceError(f"no routing rule set is in force at {at.isoformat()}")
    latest = max(rule_set.effective_from for rule_set in in_force)
    current = [rule_set for rule_set in in_force if rule_set.effective_from == latest]
    versions = sorted({rule_set.version for rule_set in current})
    if len(versions) > 1:
        raise NoRulesInForceError(
            f"rule sets {', '.join(versions)} all take effect at {latest.isoformat()}: give them different times"
        )
    return current[0]


def rules_in_force(base: RuleSet, posted: Iterable[RuleSet], at: datetime) -> RuleSet:
    """The set in force at `at` among the base set (the rules file) and the sets posted through the API.

    `select_rules` over all of them, with two choices of the service: a posted set that takes effect at the same
    time as the base set replaces it (an explicit act of an administrator wins over the file), and before every
    set's effective time the base set applies (a file whose `effective_from` lies ahead still routes until then;
    routing never stops for want of rules).
    """
    sets = [rule_set for rule_set in posted if rule_set.version != base.version]
    if all(rule_set.effective_from != base.effective_from for rule_set in sets):
        sets.append(base)
    try:
        return select_rules(sets, at)
    except NoRulesInForceError:
        if any(rule_set.effective_from <= at for rule_set in sets):
            raise
        return base


# --- routing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingDecision:
    """Where a complaint goes and why (the fields of `complaint.assigned` that routing decides)."""

    lead_department: str
    assisting_departments: tuple[str, ...]
    level: Level
    rule_id: str
    reason: str
    rules_version: str
    passed_over: tuple[str, ...] = ()
    """Ids of rules that fitted but whose lead had returned the case."""


_CATEGORY_NAMES: Final[dict[Category, str]] = {}
for _label, _category in CATEGORY_LABELS.items():
    _CATEGORY_NAMES.setdefault(_category, _label)  # a category's own name comes first, aliases after


def _department_name(code: str) -> str:
    return f"{DEPARTMENTS.get(code, code)}（{code}）"


def _region_name(region_code: str) -> str:
    if region_code in REGIONS:
        return REGIONS[region_code]
    return f"{REGIONS[CITY_CODE]}（未知区域 {region_code}，按市级）"


def _resolve(ref: str, region_code: str, rule_set: RuleSet, category: Category) -> tuple[str, ...]:
    if ref == GOV_TEMPLATE:
        return (f"gov-{region_code}",)
    if ref == SECTOR_TEMPLATE:
        return _sector_departments(rule_set.rules, category) or ()
    return (ref,)


def _sentence(rule: Rule, category: Category, region_code: str, lead: str, assisting: Sequence[str]) -> str:
    head = f"{rule.description}：" if rule.description else ""
    where, what = _region_name(region_code), _CATEGORY_NAMES[category]
    text = f"{head}{where}的「{what}」诉求由{_department_name(lead)}主办"
    if assisting:
        text += "，" + "、".join(_department_name(code) for code in assisting) + "协办"
    return text


def decide_route(
    category: Category, region_code: str, rules: RuleSet, *, exclude: frozenset[str] = frozenset()
) -> RoutingDecision:
    """Place a complaint by category and division: the first rule that fits, its lead not excluded."""
    passed_over: list[str] = []
    returned: list[str] = []
    for rule in rules.rules:
        if not rule.match.fits(category, region_code):
            continue
        (lead,) = _resolve(rule.assign.lead, region_code, rules, category)
        if lead in exclude:
            passed_over.append(rule.id)
            if lead not in returned:
                returned.append(lead)
            continue
        assisting: list[str] = []
        for ref in rule.assign.assisting:
            for code in _resolve(ref, region_code, rules, category):
                if code != lead and code not in exclude and code not in assisting:
                    assisting.append(code)
        note = f"；已退单的 {'、'.join(returned)} 不再承办" if returned else ""
        return RoutingDecision(
            lead_department=lead,
            assisting_departments=tuple(assisting),
            level=rule.assign.level,
            rule_id=rule.id,
            reason=f"{_sentence(rule, category, region_code, lead, assisting)}"
            f"（规则 {rule.id}，规则集 {rules.version}{note}）",
            rules_version=rules.version,
            passed_over=tuple(passed_over),
        )
    # Only reached when the fallback's own lead (the triage desk) was excluded: the desk still takes it.
    return RoutingDecision(
        lead_department=TRIAGE,
        assisting_departments=(),
        level="city",
        rule_id=FALLBACK_RULE_ID,
        reason=f"{_region_name(region_code)}的「{_CATEGORY_NAMES[category]}」诉求经"
        f"{'、'.join(returned) or '退单'}退回后无规则可派，由{_department_name(TRIAGE)}人工分派"
        f"（规则 {FALLBACK_RULE_ID}，规则集 {rules.version}）",
        rules_version=rules.version,
        passed_over=tuple(passed_over),
    )


def route_complaint(
    complaint: ComplaintReceived, rules: RuleSet, exclude: frozenset[str] = frozenset()
) -> RoutingDecision:
    """Route a received complaint (派单). `exclude`: departments that returned it (退单), passed over."""
    return decide_route(complaint.category, complaint.region_code, rules, exclude=exclude)
