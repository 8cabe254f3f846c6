"""Realistic raw traffic of the three channels, as a pure, seeded generator (used by `complaints simulate`,
the tests and the benchmark). Chinese content across every category and division, repeat enterprises,
some duplicates and some bad messages, each bad one with the reason it is bad.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.domain import LOCAL_TZ, REGIONS, Channel

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


class TrafficGenerator:
    """Seeded, so a test can replay exactly the same traffic."""

    def __init__(self, seed: int | None = None, duplicates: float = 0.05, bad: float = 0.03, run_tag: str = "") -> None:
        self.rng = random.Random(seed)
        self.duplicates, self.bad = duplicates, bad
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

    def next(self, now: datetime | None = None) -> RawMessage:
        now = now or datetime.now(UTC)
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

    def _id(self, prefix: str) -> str:
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
            key = self._id("TL")
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
            key = self._id("YS-")
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
            key = self._id("JD-")
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
