"""Realistic raw traffic of the three channels, as a pure, seeded generator (used by `complaints simulate`,
the tests and the benchmark). Chinese content across every category and division, repeat enterprises,
some duplicates and some bad messages, each bad one with the reason it is bad. With `method` > 0, that share of
the traffic is the rest of the method (contract 10): portal submissions, visit records and survey responses
(`MethodTraffic`). `plant` makes the series that shows the early warning and the clock at work in a short run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.domain import LOCAL_TZ, REGIONS, Category, Channel, category_from_label

# (category label, subject, content templates) — enough variety for every category of contract 6.1.
TOPICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "政务服务",
        "办事窗口反复退回材料",
        (
            "在政务服务中心办理变更登记，窗口多次退回材料，每次只说一个问题。",
            "审批事项网上办理系统经常打不开，办事要跑好几趟。",
        ),
    ),
    ("市场监管", "营业执照变更迟迟未办", ("申请营业执照经营范围变更已经一个月，登记注册一直没有结果。",)),
    (
        "融资贷款",
        "贷款审批拖延",
        ("银行对续贷贷款申请拖延三个月未放款，融资成本大增。", "想了解中小企业贷款贴息政策怎么申请授信。"),
    ),
    (
        "政策兑现",
        "奖补资金未兑现",
        ("县里承诺的技改补贴至今未兑现，企业资金周转困难。", "去年的招商引资奖补政策一直没有兑现。"),
    ),
    ("涉企执法", "重复检查", ("一个月内被不同部门重复检查五次，影响正常生产。", "执法人员以小问题为由高额罚款。")),
    ("司法公正", "判决执行难", ("法院判决已生效半年，执行案一直没有进展。",)),
    (
        "拖欠账款",
        "工程款拖欠",
        ("为街道办施工的工程已验收，工程款拖欠至今。", "政府部门采购货款欠款一年多未付，违约不还。"),
    ),
    ("涉企腐败", "工作人员吃拿卡要", ("办事人员暗示索要好处费，吃拿卡要问题严重。",)),
    (
        "要素保障",
        "园区频繁停电",
        ("工业园区本月已停电四次，未提前通知。", "企业用地指标迟迟不落实，供水供气也不稳定。"),
    ),
    ("工程建设", "施工许可办理慢", ("施工许可办理超过法定时限，工程建设无法开工。", "项目已竣工，验收备案迟迟不办。")),
    ("税费", "发票领用受限", ("企业发票领用数量受限，影响正常经营，税务窗口答复不清。",)),
    ("", "其他问题", ("希望政府多组织企业家座谈会，听取意见。", "园区道路照明不足，夜间出行不便。")),
)
LABEL_TO_CODE = {
    "政务服务": "ZWFW",
    "市场监管": "SCJG",
    "融资贷款": "RZXD",
    "政策兑现": "ZCDX",
    "涉企执法": "SQZF",
    "司法公正": "SFGZ",
    "拖欠账款": "ZWCX",
    "涉企腐败": "SQFB",
    "要素保障": "YSBZ",
    "工程建设": "GCJS",
    "税费": "SF",
    "": "QT",
}
SHORT_NAMES = {"150521": "科左中旗", "150522": "科左后旗", "150571": "开发区", "150581": "霍林郭勒"}
SURNAMES = "王李张刘陈杨赵黄周吴"
COMPANY_WORDS = (
    "草原牧歌农牧业",
    "红干椒加工",
    "科尔沁建材",
    "蒙东物流",
    "霍林河煤业",
    "奈曼食品",
    "扎鲁特牧业",
    "开鲁玉米深加工",
    "库伦荞麦",
    "通辽新能源",
)
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def make_uscc(rng: random.Random, region: str, valid: bool = True) -> str:
    body = "91" + region + "".join(rng.choice(USCC_CHARS) for _ in range(9))
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(body, USCC_WEIGHTS, strict=True))
    check = USCC_CHARS[(31 - total % 31) % 31]
    if not valid:
        check = USCC_CHARS[(USCC_CHARS.index(check) + 1) % 31]
    return body + check


@dataclass(frozen=True)
class RawMessage:
    channel: Channel
    key: str | None
    body: bytes
    bad_reason: str | None = None  # why it must become a dead letter, for bad ones
    duplicate_of: str | None = None
    http: HttpCall | None = None
    """For the method's channels: how it goes over HTTP (the survey has no raw topic: HTTP only)."""


class TrafficGenerator:
    """Seeded, so a test can replay exactly the same traffic."""

    def __init__(
        self,
        seed: int | None = None,
        duplicates: float = 0.05,
        bad: float = 0.03,
        run_tag: str = "",
        method: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.duplicates, self.bad, self.method = duplicates, bad, method
        self.sent: list[RawMessage] = []
        self.serial = 0
        self.tag = run_tag or f"{self.rng.randrange(16**6):06X}"
        self.enterprises = [
            (
                f"通辽{self.rng.choice(COMPANY_WORDS)}有限公司{i}",
                make_uscc(self.rng, self.rng.choice(list(REGIONS))[:6]),
            )
            for i in range(40)
        ]
        self._method = MethodTraffic(self)

    def next(self, now: datetime | None = None) -> RawMessage:
        now = now or datetime.now(UTC)
        if self.method > 0 and self.rng.random() < self.method:  # no draw at all when off: old seeds replay
            return self._method.next(now)
        roll = self.rng.random()
        if self.sent and roll < self.duplicates:
            original = self.rng.choice([m for m in self.sent[-200:] if m.bad_reason is None] or self.sent[-1:])
            if original.bad_reason is None:
                return RawMessage(original.channel, original.key, original.body, duplicate_of=original.key)
        if roll < self.duplicates + self.bad:
            return self._bad(now)
        msg = self._good(now)
        self.sent.append(msg)
        return msg

    def new_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.tag}{self.serial:07d}"

    def _good(self, now: datetime) -> RawMessage:
        channel = self.rng.choices((Channel.HOTLINE, Channel.COMPLAINT_LINE, Channel.SUPERVISOR), weights=(6, 3, 1))[0]
        label, subject, contents = self.rng.choice(TOPICS)
        content = self.rng.choice(contents)
        region = self.rng.choice(list(REGIONS))
        region_name = SHORT_NAMES.get(region, REGIONS[region]) if self.rng.random() < 0.3 else REGIONS[region]
        name, uscc = self.rng.choice(self.enterprises)
        if self.rng.random() < 0.05:
            uscc = make_uscc(self.rng, region, valid=False)
        person = self.rng.choice(SURNAMES) + self.rng.choice(("先生", "女士"))
        mobile = f"1{self.rng.choice('3578')}{self.rng.randrange(10**9):09d}"
        at = now - timedelta(seconds=self.rng.randrange(0, 120))
        if channel is Channel.HOTLINE:
            key = self.new_id("TL")
            body: dict[str, object] = {
                "gdbh": key,
                "ldsj": at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S"),
                "ldhm": mobile if self.rng.random() < 0.8 else f"0475-{self.rng.randrange(10**7):07d}",
                "lxr": person,
                "qymc": name,
                "tyshxydm": uscc,
                "sqlx": self.rng.choices(("投诉", "求助", "咨询", "举报", "建议"), weights=(5, 2, 2, 1, 1))[0],
                "sqfl": label if self.rng.random() < 0.6 else "",
                "sqbt": subject,
                "sqnr": content,
                "ssqy": region_name,
                "jjcd": "紧急" if self.rng.random() < 0.1 else "一般",
                "nm": "是" if self.rng.random() < 0.05 else "否",
            }
        elif channel is Channel.COMPLAINT_LINE:
            key = self.new_id("YS-")
            body = {
                "ticketId": key,
                "createdAt": int(at.timestamp() * 1000),
                "subject": subject,
                "description": content,
                "district": region,
                "tags": [label] if label and self.rng.random() < 0.5 else [],
                "priority": self.rng.choices((1, 2, 3), weights=(1, 8, 1))[0],
            }
            if self.rng.random() < 0.9:
                body["reporter"] = {
                    "name": person,
                    "mobile": f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
                    "company": name,
                    "creditCode": uscc,
                }
        else:
            key = self.new_id("JD-")
            body = {
                "report": {
                    "id": key,
                    "observedAt": at.astimezone(LOCAL_TZ).isoformat(timespec="seconds"),
                    "source": self.rng.choice(("supervisor", "monitoring_point")),
                },
                "reporter": {
                    "supervisorId": f"SUP-{self.rng.randrange(1000):04d}",
                    "name": self.rng.choice(SURNAMES) + "某",
                },
                "issue": {
                    "categoryCode": LABEL_TO_CODE[label],
                    "summary": subject,
                    "detail": content,
                    "enterprise": {"name": name, "creditCode": uscc},
                },
                "location": {"division": region_name, "address": f"{REGIONS[region]}某街道"},
            }
        return RawMessage(channel, key, json.dumps(body, ensure_ascii=False).encode("utf-8"))

    def _bad(self, now: datetime) -> RawMessage:
        good = self._good(now)
        body = json.loads(good.body)
        kind = self.rng.randrange(5)
        if kind == 0:
            return RawMessage(good.channel, good.key, good.body[: len(good.body) // 2], "truncated JSON")
        if kind == 1:
            return RawMessage(good.channel, good.key, b"\xff\xfe not utf-8 " + good.body[:20], "not UTF-8")
        if good.channel is Channel.HOTLINE:
            if kind == 2:
                del body["sqnr"]
                reason = "missing sqnr"
            elif kind == 3:
                body["ldsj"] = "昨天下午"
                reason = "unparseable ldsj"
            else:
                body["sqlx"] = "表扬"
                reason = "unknown sqlx"
        elif good.channel is Channel.COMPLAINT_LINE:
            if kind == 2:
                del body["description"]
                reason = "missing description"
            else:
                body["createdAt"] = "yesterday"
                reason = "createdAt not epoch ms"
        elif kind == 2:
            body["issue"] = {"categoryCode": "ZWFW"}
            reason = "no summary or detail"
        else:
            body["report"]["observedAt"] = "2026-11-26T10:02:11"
            reason = "observedAt without offset"
        return RawMessage(good.channel, good.key, json.dumps(body, ensure_ascii=False).encode(), reason)


# --- the rest of the method (contract 10): the portal, visits, surveys -------------------------------------------

METHOD_WEIGHTS: tuple[tuple[Channel, int], ...] = ((Channel.PORTAL, 5), (Channel.VISIT, 2), (Channel.SURVEY, 5))
"""Among the method's messages: portal submissions, visit records (1-3 problems each), survey responses."""
VISIT_OFFICIALS = ("市营商环境建设监督局 张某", "市发展和改革委员会 李某", "旗县区政府 王某", "市工业和信息化局 赵某")
SURVEY_COMMENTS = (
    "贷款审批太慢，材料要求反复变化。",
    "执法检查过于频繁，影响生产经营。",
    "奖补资金迟迟不到位。",
    "窗口办事效率有待提高。",
)


def category_code(label: str) -> str:
    """The category code of 3.1 for a label of TOPICS ('' is other)."""
    return (category_from_label(label) or Category.OTHER).value if label else Category.OTHER.value


@dataclass(frozen=True)
class HttpCall:
    """How a message goes over HTTP when it does: path and JSON body (the portal's differs from its topic's)."""

    path: str
    body: bytes
    public: bool = False
    """No key needed (the portal)."""


def _json(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _local_iso(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).isoformat(timespec="seconds")


class MethodTraffic:
    """Portal submissions, visit records and survey responses (contract 10.1, 10.2), seeded, sharing the
    enterprises and the id tag of a TrafficGenerator. Every message it makes is good: the bad bodies of these
    doors are the integration tests' business (tests/integration/test_portal_flow.py)."""

    def __init__(self, gen: TrafficGenerator) -> None:
        self.gen = gen
        self.rng = gen.rng

    def next(self, now: datetime) -> RawMessage:
        channels, weights = zip(*METHOD_WEIGHTS, strict=True)
        channel = self.rng.choices(channels, weights=weights)[0]
        if channel is Channel.PORTAL:
            return self.portal(now)
        if channel is Channel.VISIT:
            return self.visit(now)
        return self.survey(now)

    def _pick(self) -> tuple[str, str, str, str, str]:
        label, subject, contents = self.rng.choice(TOPICS)
        region = self.rng.choice(list(REGIONS))
        name, uscc = self.rng.choice(self.gen.enterprises)
        return category_code(label), subject, self.rng.choice(contents), region, f"{name}|{uscc}"

    def portal(self, now: datetime) -> RawMessage:
        category, title, content, region, who = self._pick()
        name, uscc = who.split("|")
        kind = "suggestion" if self.rng.random() < 0.2 else "complaint"
        person = self.rng.choice(SURNAMES) + self.rng.choice(("先生", "女士"))
        mobile = f"1{self.rng.choice('3578')}{self.rng.randrange(10**9):09d}"
        anonymous = self.rng.random() < 0.1
        key = self.gen.new_id("WS-")
        kafka = {
            "submissionId": key,
            "submittedAt": _local_iso(now),
            "enterprise": {"name": name, "creditCode": uscc},
            "region": REGIONS[region],
            "category": category,
            "kind": kind,
            "title": title,
            "content": f"{content}（{key[-7:]}）",
            "contact": {"name": person, "phone": mobile},
            "anonymous": anonymous,
        }
        form = {
            "enterprise_name": name,
            "credit_code": uscc,
            "region": region,
            "category": category,
            "kind": kind,
            "title": title,
            "content": kafka["content"],
            "contact_name": person,
            "contact_phone": mobile,
            "anonymous": "true" if anonymous else "false",
            "website": "",
        }
        return RawMessage(
            Channel.PORTAL, key, _json(kafka), http=HttpCall("/v1/portal/submissions", _json(form), public=True)
        )

    def visit(self, now: datetime) -> RawMessage:
        region = self.rng.choice(list(REGIONS))
        firms = self.rng.sample(self.gen.enterprises, self.rng.randint(1, 3))
        problems = []
        for _ in range(self.rng.randint(1, 3)):
            label, subject, contents = self.rng.choice(TOPICS)
            problem: dict[str, object] = {
                "enterprise": self.rng.randrange(len(firms)),
                "category": category_code(label),
                "title": subject,
                "content": self.rng.choice(contents),
            }
            if self.rng.random() < 0.1:
                problem["urgency"] = "urgent"
            problems.append(problem)
        key = self.gen.new_id("ZF-")
        body = {
            "visitId": key,
            "kind": self.rng.choice(("roundtable", "service_day", "site_visit")),
            "heldAt": _local_iso(now - timedelta(minutes=self.rng.randrange(30, 240))),
            "region": REGIONS[region],
            "officials": self.rng.sample(VISIT_OFFICIALS, 2),
            "enterprises": [{"name": n, "creditCode": c} for n, c in firms],
            "problems": problems,
        }
        raw = _json(body)
        return RawMessage(Channel.VISIT, key, raw, http=HttpCall("/v1/visits", raw))

    def survey(self, now: datetime) -> RawMessage:
        name, uscc = self.rng.choice(self.gen.enterprises)
        rated = self.rng.sample([category_code(label) for label, _, _ in TOPICS if label], self.rng.randint(2, 4))
        # Mostly content; about one response in five scores something 1 or 2 and says why: that becomes a case.
        low = self.rng.random() < 0.2
        scores = {c: self.rng.choices((3, 4, 5), weights=(2, 4, 4))[0] for c in rated}
        if low:
            scores[rated[0]] = self.rng.choice((1, 2))
        key = self.gen.new_id("WJ-")
        body: dict[str, object] = {
            "responseId": key,
            "answeredAt": _local_iso(now),
            "enterprise": {"name": name, "creditCode": uscc},
            "region": REGIONS[self.rng.choice(list(REGIONS))],
            "scores": scores,
        }
        if low or self.rng.random() < 0.2:
            body["comment"] = self.rng.choice(SURVEY_COMMENTS)
        raw = _json(body)
        return RawMessage(Channel.SURVEY, key, raw, http=HttpCall("/v1/surveys/responses", raw))


# --- the planted series: what makes the early warning (10.4) and the clock's breaches show in a short run ---------

PLANTED_REGION = "150524"  # 库伦旗
PLANTED_LABEL = "融资贷款"  # financing
PLANTED_BURST = 6
"""Cases of the planted (region, category) in the running week. With a quiet history λ is at its floor 0.5, and
P(X ≥ 6 | 0.5) ≈ 1.4e-5 < 0.01 (4 would do: ≈ 0.0018; 3 would not: ≈ 0.014)."""
PLANTED_FROM_ONE = 4
"""Of the burst, those from one enterprise: 3 or more within 30 days raise `enterprise_repeat`."""
PLANTED_HISTORY_WEEKS = (2, 3)
"""Weeks back with one case of the planted key each: a quiet history (λ = 2/8, floored to 0.5). Received two and three
weeks ago (at least 5 working days even across the Spring Festival or National Day), their resolve deadlines breach
at once. Few on purpose: early in a month they fall in the previous one, whose figures the bulletin compares with."""


@dataclass(frozen=True)
class PlantedSeries:
    history: list[RawMessage]
    """Sent at the start: the quiet weeks (cases received weeks ago, so their resolve deadlines breach at once)
    and, when one is given, a case whose resolve deadline is past its warning and not yet due."""
    burst: list[RawMessage]
    """Sent after a quiet start: the rising series of one (region, category), most of it from one enterprise."""
    enterprise: str


def plant(gen: TrafficGenerator, now: datetime, warning_received_at: datetime | None = None) -> PlantedSeries:
    """The planted series, from the generator's seeded state and `now` (pure)."""
    rng = gen.rng
    name = f"通辽库伦荞麦加工有限公司{gen.tag}"
    uscc = make_uscc(rng, PLANTED_REGION)
    history = [
        _planted_order(gen, now - timedelta(weeks=weeks, hours=rng.randrange(0, 48)), *rng.choice(gen.enterprises))
        for weeks in PLANTED_HISTORY_WEEKS
    ]
    if warning_received_at is not None:
        firm = rng.choice(gen.enterprises)
        history.append(_planted_order(gen, warning_received_at, *firm, label="政务服务", region="150502"))
    burst = []
    for i in range(PLANTED_BURST):
        firm = (name, uscc) if i < PLANTED_FROM_ONE else rng.choice(gen.enterprises)
        burst.append(_planted_order(gen, now - timedelta(seconds=PLANTED_BURST - i), *firm))
    return PlantedSeries(history, burst, name)


def _planted_order(
    gen: TrafficGenerator,
    at: datetime,
    name: str,
    uscc: str,
    *,
    label: str = PLANTED_LABEL,
    region: str = PLANTED_REGION,
) -> RawMessage:
    topic = next(t for t in TOPICS if t[0] == label)
    key = gen.new_id("TL")
    body = {
        "gdbh": key,
        "ldsj": at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S"),
        "ldhm": f"1{gen.rng.choice('3578')}{gen.rng.randrange(10**9):09d}",
        "lxr": gen.rng.choice(SURNAMES) + "先生",
        "qymc": name,
        "tyshxydm": uscc,
        "sqlx": "投诉",
        "sqfl": label,
        "sqbt": topic[1],
        "sqnr": gen.rng.choice(topic[2]),
        "ssqy": REGIONS[region],
        "jjcd": "一般",
        "nm": "否",
    }
    return RawMessage(Channel.HOTLINE, key, _json(body))
