"""Routing rules: the default policy of contract 6.1 over a table of complaints, exclusion after a return,
strict loading with the line of every bad entry, versions in force, and a dry run of a proposed set."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.routing.rules import (
    FALLBACK_RULE_ID,
    NoRulesInForceError,
    RulesError,
    RuleSet,
    decide_route,
    load_default_rules,
    load_rules,
    route_complaint,
    select_rules,
)
from shared.domain import CITY_CODE, DEPARTMENTS, REGIONS, Category, Channel, Kind, Urgency, is_county_level
from shared.events import ComplaintReceived

AT = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
COUNTIES = tuple(code for code in REGIONS if code != CITY_CODE)
_serial = itertools.count(1)


def complaint(category: str, region: str, *, flags: tuple[str, ...] = ()) -> ComplaintReceived:
    number = next(_serial)
    return ComplaintReceived(
        occurred_at=AT,
        complaint_id=f"hotline:TL{number:08d}",
        channel=Channel.HOTLINE,
        source_id=f"TL{number:08d}",
        received_at=AT,
        kind=Kind.COMPLAINT,
        category=Category(category),
        title="诉求",
        content="企业反映的问题",
        urgency=Urgency.NORMAL,
        region_code=region,
        quality_flags=flags,
    )


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_default_rules()


# (category, region, lead, level, assisting, rule id)
TABLE: list[tuple[str, str, str, str, tuple[str, ...], str]] = [
    # The city itself: the city department of each category leads.
    ("government_services", "150500", "spj", "city", (), "sector-government-services"),
    ("market_regulation", "150500", "scj", "city", (), "sector-market-regulation"),
    ("financing", "150500", "jrb", "city", (), "sector-financing"),
    ("policy_fulfillment", "150500", "fgw", "city", ("czj",), "sector-policy-fulfillment"),
    ("law_enforcement", "150500", "sfj", "city", (), "sector-law-enforcement"),
    ("judicial", "150500", "fy", "city", (), "city-only-judicial"),
    ("government_integrity", "150500", "gxj", "city", ("czj",), "sector-government-integrity"),
    ("corruption", "150500", "jw", "city", (), "city-only-corruption"),
    ("utilities", "150500", "zjj", "city", (), "sector-utilities"),
    ("construction", "150500", "zjj", "city", (), "sector-construction"),
    ("taxes_fees", "150500", "sw", "city", (), "city-only-taxes-fees"),
    ("other", "150500", "triage", "city", (), "triage-other"),
    # Every county-level division leads on its own territorial complaints (属地管理).
    ("government_services", "150502", "gov-150502", "county", ("spj",), "territorial-county"),
    ("market_regulation", "150521", "gov-150521", "county", ("scj",), "territorial-county"),
    ("financing", "150522", "gov-150522", "county", ("jrb",), "territorial-county"),
    ("policy_fulfillment", "150523", "gov-150523", "county", ("fgw", "czj"), "territorial-county"),
    ("law_enforcement", "150524", "gov-150524", "county", ("sfj",), "territorial-county"),
    ("government_integrity", "150525", "gov-150525", "county", ("gxj", "czj"), "territorial-county"),
    ("utilities", "150526", "gov-150526", "county", ("zjj",), "territorial-county"),
    ("construction", "150571", "gov-150571", "county", ("zjj",), "territorial-county"),
    ("financing", "150581", "gov-150581", "county", ("jrb",), "territorial-county"),
    # All territorial categories in one county.
    ("government_services", "150523", "gov-150523", "county", ("spj",), "territorial-county"),
    ("market_regulation", "150523", "gov-150523", "county", ("scj",), "territorial-county"),
    ("financing", "150523", "gov-150523", "county", ("jrb",), "territorial-county"),
    ("law_enforcement", "150523", "gov-150523", "county", ("sfj",), "territorial-county"),
    ("government_integrity", "150523", "gov-150523", "county", ("gxj", "czj"), "territorial-county"),
    ("utilities", "150523", "gov-150523", "county", ("zjj",), "territorial-county"),
    ("construction", "150523", "gov-150523", "county", ("zjj",), "territorial-county"),
    # policy_fulfillment and government_integrity elsewhere: both city departments assist.
    ("policy_fulfillment", "150502", "gov-150502", "county", ("fgw", "czj"), "territorial-county"),
    ("policy_fulfillment", "150581", "gov-150581", "county", ("fgw", "czj"), "territorial-county"),
    ("government_integrity", "150571", "gov-150571", "county", ("gxj", "czj"), "territorial-county"),
    ("government_integrity", "150521", "gov-150521", "county", ("gxj", "czj"), "territorial-county"),
    # Corruption, judicial and taxes_fees in a county still go to the city department.
    ("corruption", "150502", "jw", "city", (), "city-only-corruption"),
    ("corruption", "150523", "jw", "city", (), "city-only-corruption"),
    ("corruption", "150581", "jw", "city", (), "city-only-corruption"),
    ("judicial", "150521", "fy", "city", (), "city-only-judicial"),
    ("judicial", "150525", "fy", "city", (), "city-only-judicial"),
    ("judicial", "150571", "fy", "city", (), "city-only-judicial"),
    ("taxes_fees", "150522", "sw", "city", (), "city-only-taxes-fees"),
    ("taxes_fees", "150524", "sw", "city", (), "city-only-taxes-fees"),
    ("taxes_fees", "150526", "sw", "city", (), "city-only-taxes-fees"),
    # other goes to triage, in a county as well.
    ("other", "150502", "triage", "city", (), "triage-other"),
    ("other", "150523", "triage", "city", (), "triage-other"),
    ("other", "150571", "triage", "city", (), "triage-other"),
    # A code that is none of ours counts as the city.
    ("financing", "152301", "jrb", "city", (), "sector-financing"),
    ("construction", "110101", "zjj", "city", (), "sector-construction"),
]


@pytest.mark.parametrize(("category", "region", "lead", "level", "assisting", "rule_id"), TABLE)
def test_default_policy_places_each_complaint(
    rules: RuleSet, category: str, region: str, lead: str, level: str, assisting: tuple[str, ...], rule_id: str
) -> None:
    decision = route_complaint(complaint(category, region), rules)
    assert (decision.lead_department, decision.level, decision.assisting_departments, decision.rule_id) == (
        lead,
        level,
        assisting,
        rule_id,
    )
    assert decision.rules_version == rules.version
    assert decision.passed_over == ()
    assert rule_id in decision.reason
    assert DEPARTMENTS[lead] in decision.reason


def test_table_covers_every_category_and_every_division() -> None:
    assert len(TABLE) >= 40
    assert {row[0] for row in TABLE} == {category.value for category in Category}
    assert {row[1] for row in TABLE} >= set(REGIONS)
    county_rows = {row[0] for row in TABLE if is_county_level(row[1])}
    assert county_rows == {category.value for category in Category}


def test_unknown_region_goes_to_the_city_department(rules: RuleSet) -> None:
    # Intake writes 150500 when it cannot resolve the region, and flags it.
    decision = route_complaint(complaint("policy_fulfillment", CITY_CODE, flags=("region_unknown",)), rules)
    assert (decision.lead_department, decision.assisting_departments, decision.level) == ("fgw", ("czj",), "city")


def test_reason_is_a_sentence_naming_region_category_departments_and_rule(rules: RuleSet) -> None:
    decision = route_complaint(complaint("policy_fulfillment", "150523"), rules)
    assert decision.reason == (
        "属地管理：开鲁县的「政策兑现」诉求由开鲁县人民政府（gov-150523）主办，"
        "市发展和改革委员会（fgw）、市财政局（czj）协办（规则 territorial-county，规则集 2026.1）"
    )
    city = route_complaint(complaint("other", "150500"), rules)
    assert "通辽市的「其他」诉求由12345 派单席（triage）主办" in city.reason
    foreign = route_complaint(complaint("financing", "152301"), rules)
    assert "未知区域 152301" in foreign.reason


# --- exclusion after a return ----------------------------------------------------------------------------


def test_county_return_goes_to_the_city_department(rules: RuleSet) -> None:
    decision = route_complaint(complaint("policy_fulfillment", "150523"), rules, frozenset({"gov-150523"}))
    assert (decision.lead_department, decision.assisting_departments, decision.level) == ("fgw", ("czj",), "city")
    assert decision.rule_id == "sector-policy-fulfillment"
    assert decision.passed_over == ("territorial-county",)
    assert "gov-150523 不再承办" in decision.reason


def test_second_return_ends_at_triage(rules: RuleSet) -> None:
    decision = route_complaint(complaint("financing", "150525"), rules, frozenset({"gov-150525", "jrb"}))
    assert (decision.lead_department, decision.rule_id, decision.level) == ("triage", FALLBACK_RULE_ID, "city")
    assert decision.passed_over == ("territorial-county", "sector-financing")
    assert "gov-150525、jrb 不再承办" in decision.reason


@pytest.mark.parametrize(
    ("category", "region", "returned_by"),
    [
        ("financing", "150500", "jrb"),
        ("construction", "150500", "zjj"),
        ("corruption", "150523", "jw"),  # never falls through to the county government
        ("judicial", "150502", "fy"),
        ("taxes_fees", "150581", "sw"),
    ],
)
def test_city_return_goes_to_triage(rules: RuleSet, category: str, region: str, returned_by: str) -> None:
    decision = route_complaint(complaint(category, region), rules, frozenset({returned_by}))
    assert decision.lead_department == "triage"
    assert decision.rule_id == FALLBACK_RULE_ID


def test_excluded_department_does_not_assist_either(rules: RuleSet) -> None:
    decision = route_complaint(complaint("government_integrity", "150526"), rules, frozenset({"czj"}))
    assert (decision.lead_department, decision.assisting_departments) == ("gov-150526", ("gxj",))
    assert decision.passed_over == ()


def test_excluding_the_desk_still_ends_at_the_desk(rules: RuleSet) -> None:
    decision = route_complaint(complaint("other", "150523"), rules, frozenset({"triage"}))
    assert (decision.lead_department, decision.rule_id) == ("triage", FALLBACK_RULE_ID)
    assert "无规则可派" in decision.reason


def test_departments_that_no_rule_names_change_nothing(rules: RuleSet) -> None:
    plain = route_complaint(complaint("financing", "150523"), rules)
    excluded = route_complaint(complaint("financing", "150523"), rules, frozenset({"yshj", "nobody"}))
    assert (plain.lead_department, plain.assisting_departments) == (
        excluded.lead_department,
        excluded.assisting_departments,
    )


@given(
    category=st.sampled_from(list(Category)),
    region=st.sampled_from([*REGIONS, "152301", "000000"]),
    exclude=st.frozensets(st.sampled_from(sorted(DEPARTMENTS)), max_size=6),
)
def test_every_decision_is_well_formed(category: Category, region: str, exclude: frozenset[str]) -> None:
    decision = decide_route(category, region, load_default_rules(), exclude=exclude)
    assert decision.lead_department in DEPARTMENTS
    assert decision.lead_department not in decision.assisting_departments
    assert len(set(decision.assisting_departments)) == len(decision.assisting_departments)
    assert not set(decision.assisting_departments) & exclude
    assert decision.lead_department == "triage" or decision.lead_department not in exclude
    assert (decision.level == "county") == decision.lead_department.startswith("gov-")
    if decision.level == "county":
        assert decision.lead_department == f"gov-{region}"
        assert category not in (Category.CORRUPTION, Category.JUDICIAL, Category.TAXES_FEES, Category.OTHER)


# --- loading -----------------------------------------------------------------------------------------------

GOOD = """\
version: "t1"
effective_from: "2026-01-01T00:00:00+08:00"
rules:
  - id: sector-financing
    match: {categories: [financing]}
    assign: {lead: jrb, level: city}
  - id: fallback-triage
    assign: {lead: triage, level: city}
"""


def test_shipped_file_loads_and_equals_the_default() -> None:
    from importlib.resources import files

    text = files("services.routing").joinpath("rules.default.yaml").read_text(encoding="utf-8")
    assert load_rules(text, "rules.default.yaml") == load_default_rules()
    assert load_default_rules().effective_from == datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))
    assert load_default_rules().fallback.id == FALLBACK_RULE_ID


def test_a_minimal_file_loads() -> None:
    rule_set = load_rules(GOOD)
    assert [rule.id for rule in rule_set.rules] == ["sector-financing", FALLBACK_RULE_ID]
    assert route_complaint(complaint("financing", "150523"), rule_set).lead_department == "jrb"
    assert route_complaint(complaint("judicial", "150523"), rule_set).lead_department == "triage"


def test_numbers_that_yaml_reads_are_accepted_where_they_are_safe() -> None:
    text = GOOD.replace('version: "t1"', "version: 3").replace(
        "match: {categories: [financing]}", "match: {categories: [financing], regions: [150571]}"
    )
    rule_set = load_rules(text)
    assert rule_set.version == "3"
    assert rule_set.rules[0].match.regions == ("150571",)


BROKEN: list[tuple[str, str, int, str]] = [
    ("invalid YAML", GOOD.replace("{lead: jrb, level: city}", "{lead: jrb, level: city"), 7, "invalid YAML"),
    ("unknown top-level key", GOOD.replace('version: "t1"', 'version: "t1"\nowner: ops'), 2, "unknown key 'owner'"),
    (
        "unknown rule key",
        GOOD.replace("    match: {categories: [financing]}", "    mach: {categories: [financing]}"),
        5,
        "unknown key 'mach'",
    ),
    (
        "unknown match key",
        GOOD.replace("{categories: [financing]}", "{categories: [financing], county: true}"),
        5,
        "unknown key 'county'",
    ),
    (
        "unknown category",
        GOOD.replace("{categories: [financing]}", "\n      categories:\n        - financing\n        - loans"),
        8,
        "unknown category 'loans'",
    ),
    ("unknown lead", GOOD.replace("lead: jrb", "lead: bank"), 6, "unknown department 'bank'"),
    (
        "unknown assisting department",
        GOOD.replace("{lead: jrb, level: city}", "\n      lead: jrb\n      assisting: [czj, cbirc]\n      level: city"),
        8,
        "unknown department 'cbirc'",
    ),
    (
        "unknown county government",
        GOOD.replace("lead: jrb, level: city", "lead: gov-150599, level: county"),
        6,
        "gov-150599",
    ),
    ("unknown level", GOOD.replace("lead: jrb, level: city", "lead: jrb, level: town"), 6, "unknown level 'town'"),
    (
        "unknown region level",
        GOOD.replace("{categories: [financing]}", "{categories: [financing], region_level: town}"),
        5,
        "unknown region_level 'town'",
    ),
    (
        "unknown region code",
        GOOD.replace("{categories: [financing]}", "{categories: [financing], regions: ['150599']}"),
        5,
        "unknown division code '150599'",
    ),
    ("duplicate rule id", GOOD.replace("id: fallback-triage", "id: sector-financing"), 7, "duplicate rule id"),
    (
        "duplicate key",
        GOOD.replace("    assign: {lead: jrb", "    id: again\n    assign: {lead: jrb"),
        6,
        "duplicate key 'id'",
    ),
    ("no fallback", GOOD.replace("id: fallback-triage", "id: catch-all"), 7, "no fallback rule"),
    (
        "fallback not last",
        GOOD + "  - id: after\n    assign: {lead: spj, level: city}\n",
        7,
        "must be the last rule",
    ),
    (
        "fallback with a match",
        GOOD.replace("  - id: fallback-triage\n", "  - id: fallback-triage\n    match: {region_level: city}\n"),
        8,
        "must fit every complaint",
    ),
    (
        "fallback not to triage",
        GOOD.replace("assign: {lead: triage, level: city}", "assign: {lead: spj, level: city}"),
        8,
        "must lead to triage",
    ),
    (
        "county template outside counties",
        GOOD.replace("lead: jrb, level: city", "lead: 'gov-{region_code}', level: county"),
        4,
        "county-level divisions only",
    ),
    ("level against lead", GOOD.replace("lead: jrb, level: city", "lead: jrb, level: county"), 6, "does not fit lead"),
    (
        "lead also assisting",
        GOOD.replace("lead: jrb, level: city", "lead: jrb, assisting: [jrb], level: city"),
        6,
        "cannot also assist",
    ),
    (
        "sector template without a sector rule",
        GOOD.replace(
            "  - id: fallback-triage\n",
            "  - id: territorial-county\n    match: {categories: [utilities], region_level: county}\n"
            "    assign: {lead: 'gov-{region_code}', assisting: ['{sector}'], level: county}\n"
            "  - id: fallback-triage\n",
        ),
        9,
        "no city department leading on utilities",
    ),
    ("bad rule id", GOOD.replace("id: sector-financing", "id: Sector Financing"), 4, "lower-case words"),
    ("missing assign", GOOD.replace("    assign: {lead: jrb, level: city}\n", ""), 4, "missing key 'assign'"),
    ("naive effective_from", GOOD.replace("T00:00:00+08:00", "T00:00:00"), 2, "UTC offset"),
    ("bare float version", GOOD.replace('version: "t1"', "version: 2026.10"), 1, "quoted string"),
    ("no rules", GOOD.split("rules:", maxsplit=1)[0] + "rules: []\n", 3, "at least its fallback rule"),
    ("not a mapping", "- version: 1\n", 1, "a rules file is a mapping"),
    ("empty", "\n", 1, "empty rules file"),
    ("two documents", GOOD + "---\nversion: two\n", 9, "expected a single document"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_broken_rules_files_are_refused_with_their_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(text, "proposed.yaml")
    message = str(caught.value)
    assert caught.value.source == "proposed.yaml"
    assert any(problem.line == line for problem in caught.value.problems), message
    assert f"proposed.yaml:{line}:" in message
    assert fragment in message


def test_every_problem_of_a_file_is_listed() -> None:
    text = GOOD.replace("lead: jrb", "lead: bank").replace("[financing]", "[loans]")
    with pytest.raises(RulesError) as caught:
        load_rules(text, "two.yaml")
    assert [problem.line for problem in caught.value.problems] == [5, 6]


def test_a_rule_set_built_in_code_is_checked_as_a_whole() -> None:
    with pytest.raises(ValidationError, match="no fallback rule"):
        RuleSet.model_validate(
            {
                "version": "x",
                "effective_from": "2026-01-01T00:00:00Z",
                "rules": [{"id": "only", "assign": {"lead": "spj", "level": "city"}}],
            }
        )


# --- versions in force and dry runs ----------------------------------------------------------------------


def proposed_rules() -> RuleSet:
    """A proposal: financing in the development zone goes straight to jrb, from 2027."""
    from importlib.resources import files

    text = files("services.routing").joinpath("rules.default.yaml").read_text(encoding="utf-8")
    text = text.replace('version: "2026.1"', 'version: "2027.1"').replace(
        '"2026-01-01T00:00:00+08:00"', '"2027-01-01T00:00:00+08:00"'
    )
    extra = (
        "  - id: zone-financing\n"
        "    description: 开发区融资诉求由市地方金融管理局直接办理\n"
        '    match: {categories: [financing], regions: ["150571"]}\n'
        "    assign: {lead: jrb, level: city}\n"
    )
    marker = "  - id: territorial-county\n"
    return load_rules(text.replace(marker, extra + marker), "proposed.yaml")


def test_dry_run_compares_current_and_proposed_sets(rules: RuleSet) -> None:
    proposed = proposed_rules()
    zone = complaint("financing", "150571")
    now, then = route_complaint(zone, rules), route_complaint(zone, proposed)
    assert (now.lead_department, now.rule_id) == ("gov-150571", "territorial-county")
    assert (then.lead_department, then.rule_id, then.rules_version) == ("jrb", "zone-financing", "2027.1")
    assert "开发区融资诉求由市地方金融管理局直接办理" in then.reason
    # Everything else is placed the same way.
    for category, region, *_ in TABLE:
        if (category, region) == ("financing", "150571"):
            continue
        before, after = (
            route_complaint(complaint(category, region), rules),
            route_complaint(complaint(category, region), proposed),
        )
        assert (before.lead_department, before.assisting_departments, before.rule_id) == (
            after.lead_department,
            after.assisting_departments,
            after.rule_id,
        )


def test_select_rules_picks_the_set_in_force(rules: RuleSet) -> None:
    proposed = proposed_rules()
    sets = [proposed, rules]
    assert select_rules(sets, datetime(2026, 6, 1, tzinfo=UTC)) is rules
    assert select_rules(sets, datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=8)))) is proposed
    assert select_rules(sets, datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC)) is rules
    assert select_rules(sets, datetime(2026, 12, 31, 16, 0, tzinfo=UTC)) is proposed
    with pytest.raises(NoRulesInForceError, match="no routing rule set"):
        select_rules(sets, datetime(2025, 12, 31, 15, 59, tzinfo=UTC))
    with pytest.raises(ValueError, match="UTC offset"):
        select_rules(sets, datetime(2026, 6, 1))


def test_two_sets_taking_effect_at_once_are_ambiguous(rules: RuleSet) -> None:
    twin = rules.model_copy(update={"version": "2026.1-bis"})
    with pytest.raises(NoRulesInForceError, match="all take effect"):
        select_rules([rules, twin], AT)
    assert select_rules([rules, rules], AT) is rules
