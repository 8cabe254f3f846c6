"""Reference data of the served city (contract sections 2.3, 3.1 and 6): regions, categories, departments.

Pure data and look-ups, no I/O. The routing policy itself lives in services/routing.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from enum import StrEnum
from typing import Final

CITY_CODE: Final = "150500"
"""通辽市 itself: the region of a complaint whose division is unknown."""

LOCAL_TZ_NAME: Final = "Asia/Shanghai"
# Asia/Shanghai has kept +08:00 without daylight saving since 1991; a fixed offset gives the same answers
# for every date the project can see, and needs no tz database on the host. The one definition of local time.
LOCAL_TZ: Final = timezone(timedelta(hours=8), LOCAL_TZ_NAME)


class Channel(StrEnum):
    """Where a complaint came in."""

    HOTLINE = "hotline"
    COMPLAINT_LINE = "complaint_line"
    SUPERVISOR = "supervisor"
    PORTAL = "portal"
    """The enterprises' own online portal (问题线索和意见建议征集, contract 10.1)."""
    VISIT = "visit"
    """Problems brought back from round-tables, service days and site visits (政企恳谈会, 企业家服务日, 10.2)."""
    SURVEY = "survey"
    """A low satisfaction score with a comment (满意度问卷, 10.2)."""


RAW_CHANNELS: Final[tuple[Channel, ...]] = (
    Channel.HOTLINE,
    Channel.COMPLAINT_LINE,
    Channel.SUPERVISOR,
    Channel.PORTAL,
    Channel.VISIT,
)
"""The channels with a raw topic `intake.<channel>`; survey responses come over HTTP only (contract 1)."""


class Kind(StrEnum):
    CONSULTATION = "consultation"
    REQUEST = "request"
    COMPLAINT = "complaint"
    REPORT = "report"
    SUGGESTION = "suggestion"


class Category(StrEnum):
    GOVERNMENT_SERVICES = "government_services"
    MARKET_REGULATION = "market_regulation"
    FINANCING = "financing"
    POLICY_FULFILLMENT = "policy_fulfillment"
    LAW_ENFORCEMENT = "law_enforcement"
    JUDICIAL = "judicial"
    GOVERNMENT_INTEGRITY = "government_integrity"
    CORRUPTION = "corruption"
    UTILITIES = "utilities"
    CONSTRUCTION = "construction"
    TAXES_FEES = "taxes_fees"
    OTHER = "other"


class Urgency(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


REGIONS: Final[dict[str, str]] = {
    "150500": "通辽市",
    "150502": "科尔沁区",
    "150521": "科尔沁左翼中旗",
    "150522": "科尔沁左翼后旗",
    "150523": "开鲁县",
    "150524": "库伦旗",
    "150525": "奈曼旗",
    "150526": "扎鲁特旗",
    "150571": "通辽经济技术开发区",
    "150581": "霍林郭勒市",
}

_REGION_ALIASES: Final[dict[str, str]] = {
    "通辽": "150500",
    "科尔沁": "150502",
    "科左中旗": "150521",
    "科左中": "150521",
    "科左后旗": "150522",
    "科左后": "150522",
    "开鲁": "150523",
    "库伦": "150524",
    "奈曼": "150525",
    "扎鲁特": "150526",
    "开发区": "150571",
    "经开区": "150571",
    "通辽开发区": "150571",
    "通辽经开区": "150571",
    "通辽经济开发区": "150571",
    "霍林郭勒": "150581",
    "霍市": "150581",
}

_REGION_BY_NAME: Final[dict[str, str]] = {name: code for code, name in REGIONS.items()} | _REGION_ALIASES


def region_code_of(value: str) -> str | None:
    """The 6-digit division code for a name, a short name or a code; None when it is none of ours.

    A name may carry the city prefix (通辽市开鲁县) and surrounding spaces.
    """
    text = value.strip().replace(" ", "").replace("\u3000", "")
    if text in REGIONS:
        return text
    if text in _REGION_BY_NAME:
        return _REGION_BY_NAME[text]
    for prefix in ("内蒙古自治区", "内蒙古", "通辽市"):
        if text.startswith(prefix) and len(text) > len(prefix):
            return region_code_of(text[len(prefix) :])
    return None


def is_county_level(region_code: str) -> bool:
    """Every division of the city but the city itself counts as county level for routing."""
    return region_code in REGIONS and region_code != CITY_CODE


# Labels that name a category (contract 6.1): the Chinese names of the supervisor codes and two aliases.
CATEGORY_LABELS: Final[dict[str, Category]] = {
    "政务服务": Category.GOVERNMENT_SERVICES,
    "市场监管": Category.MARKET_REGULATION,
    "融资信贷": Category.FINANCING,
    "政策兑现": Category.POLICY_FULFILLMENT,
    "涉企执法": Category.LAW_ENFORCEMENT,
    "司法公正": Category.JUDICIAL,
    "政务诚信": Category.GOVERNMENT_INTEGRITY,
    "涉企腐败": Category.CORRUPTION,
    "要素保障": Category.UTILITIES,
    "工程建设": Category.CONSTRUCTION,
    "税费": Category.TAXES_FEES,
    "其他": Category.OTHER,
    "融资贷款": Category.FINANCING,
    "拖欠账款": Category.GOVERNMENT_INTEGRITY,
}

# Supervisor category codes (contract 2.3).
CATEGORY_CODES: Final[dict[str, Category]] = {
    "ZWFW": Category.GOVERNMENT_SERVICES,
    "SCJG": Category.MARKET_REGULATION,
    "RZXD": Category.FINANCING,
    "ZCDX": Category.POLICY_FULFILLMENT,
    "SQZF": Category.LAW_ENFORCEMENT,
    "SFGZ": Category.JUDICIAL,
    "ZWCX": Category.GOVERNMENT_INTEGRITY,
    "SQFB": Category.CORRUPTION,
    "YSBZ": Category.UTILITIES,
    "GCJS": Category.CONSTRUCTION,
    "SF": Category.TAXES_FEES,
    "QT": Category.OTHER,
}

# Keywords per category, in the contract's order: that order breaks ties (contract 6.1).
CATEGORY_KEYWORDS: Final[tuple[tuple[Category, tuple[str, ...]], ...]] = (
    (Category.FINANCING, ("贷款", "融资", "授信")),
    (Category.GOVERNMENT_INTEGRITY, ("拖欠", "欠款", "工程款", "违约")),
    (Category.MARKET_REGULATION, ("营业执照", "登记注册")),
    (Category.GOVERNMENT_SERVICES, ("审批", "办事", "窗口", "材料")),
    (Category.POLICY_FULFILLMENT, ("补贴", "奖补", "兑现")),
    (Category.LAW_ENFORCEMENT, ("执法", "罚款", "检查")),
    (Category.JUDICIAL, ("法院", "判决", "执行案")),
    (Category.CORRUPTION, ("索要", "吃拿卡要", "受贿")),
    (Category.UTILITIES, ("停电", "供水", "供气", "用地")),
    (Category.CONSTRUCTION, ("施工许可", "工程建设", "竣工")),
    (Category.TAXES_FEES, ("税", "发票")),
)


def category_from_label(label: str) -> Category | None:
    """The category a label names (政务服务, 融资贷款, …) or a supervisor code names (ZWFW, …)."""
    text = label.strip()
    return CATEGORY_LABELS.get(text) or CATEGORY_CODES.get(text.upper())


def category_from_text(text: str) -> Category:
    """The category with the most keyword hits in the text; ties go to the one listed first; none: other."""
    best, best_hits = Category.OTHER, 0
    for category, words in CATEGORY_KEYWORDS:
        hits = sum(text.count(word) for word in words)
        if hits > best_hits:
            best, best_hits = category, hits
    return best


DEPARTMENTS: Final[dict[str, str]] = {
    "spj": "市行政审批和政务服务局",
    "scj": "市市场监督管理局",
    "jrb": "市地方金融管理局",
    "fgw": "市发展和改革委员会",
    "sfj": "市司法局",
    "fy": "市中级人民法院",
    "gxj": "市工业和信息化局",
    "jw": "市纪委监委",
    "zjj": "市住房和城乡建设局",
    "sw": "国家税务总局通辽市税务局",
    "czj": "市财政局",
    "yshj": "市营商环境建设监督局",
    "triage": "12345 派单席",
    "hotline": "12345 热线回访",  # makes the callbacks (回访); the callback stage's deadlines are its own
} | {f"gov-{code}": f"{name}人民政府" for code, name in REGIONS.items() if code != CITY_CODE}


def is_department(code: str) -> bool:
    return code in DEPARTMENTS
