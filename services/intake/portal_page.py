"""The portal's pages (contract 10.1), in Chinese, whole in one response: inline CSS, one small inline script (the
credit code checked as it is typed), nothing from another host; every value escaped. They work without JavaScript
and on a phone (one column, large controls)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Final

from shared.domain import CATEGORY_LABELS, CITY_CODE, DEPARTMENTS, LOCAL_TZ, REGIONS, Category

CATEGORY_NAMES: Final = {cat: next(label for label, c in CATEGORY_LABELS.items() if c is cat) for cat in Category}
STATE_NAMES: Final = {
    "received": "已受理，等待派单",
    "assigned": "已派单，等待承办单位签收",
    "accepted": "承办单位已签收",
    "in_progress": "办理中",
    "paused": "暂停办理（等待企业补充）",
    "resolved": "已办结",
    "closed": "已办结并完成回访",
    "reopened": "重新办理中",
    "returned": "退回重新派单中",
    "triage": "派单席处理中",
}
LABELS: Final = {
    "enterprise_name": "企业名称",
    "credit_code": "统一社会信用代码",
    "region": "所属地区",
    "category": "问题类别",
    "kind": "类型",
    "title": "标题",
    "content": "具体内容",
    "contact_name": "联系人",
    "contact_phone": "联系电话",
    "anonymous": "匿名",
}

CSS: Final = """
*{box-sizing:border-box}
body{margin:0;font-family:"Noto Sans CJK SC","Noto Sans SC","PingFang SC","Microsoft YaHei",sans-serif;
 background:#f3f5f8;color:#1d2733;font-size:16px;line-height:1.6}
header{background:#b3261e;color:#fff;padding:14px 16px}
header h1{margin:0;font-size:1.25rem}header p{margin:2px 0 0;font-size:.9rem;opacity:.9}
main{max-width:680px;margin:0 auto;padding:16px}
.card{background:#fff;border-radius:8px;padding:16px;margin-bottom:16px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
label{display:block;font-weight:600;margin:14px 0 4px}
.req{color:#b3261e}
input[type=text],input[type=tel],select,textarea{width:100%;padding:10px;font-size:1rem;border:1px solid #b8c2cc;
 border-radius:6px;background:#fff;font-family:inherit}
textarea{min-height:140px}
.err input,.err select,.err textarea{border-color:#b3261e;background:#fff6f5}
.msg{color:#b3261e;font-size:.9rem;margin-top:4px;min-height:0}
.hint{color:#5a6672;font-size:.85rem}
.choices label{display:inline-block;font-weight:400;margin:4px 16px 4px 0}
.trap{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
button{margin-top:20px;width:100%;padding:12px;font-size:1.1rem;background:#b3261e;color:#fff;border:0;border-radius:6px}
.banner{background:#e8f5e9;border:1px solid #7cb342;padding:12px;border-radius:6px;margin-bottom:16px}
.alert{background:#fff6f5;border:1px solid #b3261e;padding:12px;border-radius:6px;margin-bottom:16px}
.number{font-size:1.4rem;font-weight:700;letter-spacing:1px}
dl{margin:0}dt{color:#5a6672;font-size:.9rem;margin-top:10px}dd{margin:0;font-weight:600}
.state{display:inline-block;background:#1565c0;color:#fff;padding:2px 10px;border-radius:12px}
footer{text-align:center;color:#5a6672;font-size:.8rem;padding:16px}
"""

SCRIPT: Final = """
(function(){
  var A="0123456789ABCDEFGHJKLMNPQRTUWXY",W=[1,3,9,27,19,26,16,17,20,29,25,13,8,24,10,30,28];
  function ok(c){if(c.length!==18)return false;var s=0;for(var i=0;i<17;i++){var v=A.indexOf(c[i]);
    if(v<0)return false;s+=v*W[i];}var k=A.indexOf(c[17]);return k>=0&&A[(31-s%31)%31]===c[17];}
  var f=document.getElementById("credit_code"),m=document.getElementById("credit_code-msg");
  if(!f||!m)return;
  function check(){var c=f.value.replace(/\\s/g,"").toUpperCase();var bad=c.length>0&&!ok(c);
    m.textContent=bad?(c.length<18?"统一社会信用代码应为18位（已输入"+c.length+"位）":"统一社会信用代码校验位不符，请核对"):"";
    f.setAttribute("aria-invalid",bad?"true":"false");f.parentNode.className=bad?"field err":"field";}
  f.addEventListener("input",check);
})();
"""


def _page(title: str, body: str, *, script: bool = False) -> str:
    js = f"<script>{SCRIPT}</script>" if script else ""
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        "<header><h1>通辽市营商环境问题线索和意见建议征集</h1><p>市营商环境建设监督局</p></header>"
        f"<main>{body}</main><footer>通辽市营商环境建设监督局 · 接诉即办 · 限时反馈 · 闭环管理</footer>"
        f"{js}</body></html>"
    )


def _field(name: str, control: str, errors: Mapping[str, str], *, required: bool, hint: str = "") -> str:
    message = errors.get(name, "")
    star = ' <span class="req">*</span>' if required else ""
    hint_html = f'<div class="hint">{escape(hint)}</div>' if hint else ""
    return (
        f'<div class="field{" err" if message else ""}" id="{name}-field">'
        f'<label for="{name}">{LABELS[name]}{star}</label>{control}{hint_html}'
        f'<div class="msg" id="{name}-msg" role="alert">{escape(message)}</div></div>'
    )


def _text_input(name: str, values: Mapping[str, str], kind: str = "text", extra: str = "") -> str:
    value = escape(values.get(name, ""), quote=True)
    return f'<input type="{kind}" id="{name}" name="{name}" value="{value}"{extra}>'


def _select(name: str, options: list[tuple[str, str]], chosen: str) -> str:
    items = "".join(
        f'<option value="{escape(code, quote=True)}"{" selected" if code == chosen else ""}>{escape(text)}</option>'
        for code, text in options
    )
    return f'<select id="{name}" name="{name}"><option value="">请选择</option>{items}</select>'


def form_page(values: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None) -> str:
    """The submission form; with `errors`, each message sits beside its field and the values are kept."""
    values, errors = values or {}, errors or {}
    regions = [(code, name) for code, name in REGIONS.items()]
    categories = [(cat.value, CATEGORY_NAMES[cat]) for cat in Category]
    kind = values.get("kind", "complaint")
    anonymous = values.get("anonymous", "") in ("true", "on", "1")
    alert = '<div class="alert" role="alert">提交未成功，请按红色提示修改后再提交。</div>' if errors else ""
    kinds = "".join(
        f'<label><input type="radio" name="kind" value="{code}"{" checked" if kind == code else ""}> {text}</label>'
        for code, text in (("complaint", "问题线索"), ("suggestion", "意见建议"))
    )
    body = (
        f'{alert}<div class="card"><p>企业可在此反映营商环境方面的问题线索、提出意见建议。提交后获得查询编号，'
        '可随时查看办理进度和答复。带 <span class="req">*</span> 为必填。</p></div>'
        '<form class="card" method="post" action="/v1/portal/submissions" accept-charset="utf-8" novalidate>'
        + _field(
            "enterprise_name", _text_input("enterprise_name", values, extra=' maxlength="100"'), errors, required=True
        )
        + _field(
            "credit_code",
            _text_input("credit_code", values, extra=' maxlength="30" autocomplete="off" spellcheck="false"'),
            errors,
            required=False,
            hint="18位，填写后自动核对校验位",
        )
        + _field("region", _select("region", regions, values.get("region", "")), errors, required=True)
        + _field("category", _select("category", categories, values.get("category", "")), errors, required=True)
        + _field("kind", f'<div class="choices" id="kind">{kinds}</div>', errors, required=True)
        + _field("title", _text_input("title", values, extra=' maxlength="100"'), errors, required=True)
        + _field(
            "content",
            f'<textarea id="content" name="content" maxlength="5000">{escape(values.get("content", ""))}</textarea>',
            errors,
            required=True,
        )
        + _field("contact_name", _text_input("contact_name", values, extra=' maxlength="50"'), errors, required=False)
        + _field(
            "contact_phone",
            _text_input("contact_phone", values, "tel", ' maxlength="30"'),
            errors,
            required=False,
            hint="仅用于承办单位联系您，不在查询页面显示",
        )
        + _field(
            "anonymous",
            f'<div class="choices"><label><input type="checkbox" id="anonymous" name="anonymous" value="true"'
            f"{' checked' if anonymous else ''}> 匿名反映（不向承办单位提供联系人和电话）</label></div>",
            errors,
            required=False,
        )
        + '<div class="trap" aria-hidden="true"><label for="website">网站（请勿填写）</label>'
        '<input type="text" id="website" name="website" value="" tabindex="-1" autocomplete="off"></div>'
        '<button type="submit" id="submit">提交</button></form>'
        '<div class="card"><form method="get" action="/portal"><label for="track">查询办理进度</label>'
        '<input type="text" id="track" name="track" placeholder="查询编号，如 PT20261126000123">'
        '<button type="submit">查询</button></form></div>'
    )
    return _page("问题线索和意见建议征集", body, script=True)


@dataclass(frozen=True)
class TrackView:
    """What the tracking page shows of a case: never the contact's phone."""

    number: str
    title: str
    category: str
    region_code: str
    received_at: datetime
    state: str
    lead_department: str | None
    note: str | None
    changed_at: datetime | None


def _local(moment: datetime) -> str:
    return moment.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def track_page(view: TrackView, *, new: bool = False) -> str:
    banner = (
        f'<div class="banner" role="status">提交成功。请记下您的查询编号：<div class="number" id="tracking-number">'
        f"{escape(view.number)}</div></div>"
        if new
        else ""
    )
    department = DEPARTMENTS.get(view.lead_department or "", view.lead_department or "待派单")
    note = (
        f'<dt>办理答复</dt><dd id="reply">{escape(view.note)}</dd>'
        if view.note
        else '<dt>办理答复</dt><dd id="reply">尚未答复</dd>'
    )
    try:
        category_name = CATEGORY_NAMES[Category(view.category)]
    except ValueError:
        category_name = view.category
    body = (
        f'{banner}<div class="card"><dl>'
        f'<dt>查询编号</dt><dd id="number">{escape(view.number)}</dd>'
        f"<dt>标题</dt><dd>{escape(view.title)}</dd>"
        f"<dt>问题类别</dt><dd>{escape(category_name)}</dd>"
        f"<dt>所属地区</dt><dd>{escape(REGIONS.get(view.region_code, REGIONS[CITY_CODE]))}</dd>"
        f"<dt>提交时间</dt><dd>{_local(view.received_at)}</dd>"
        f'<dt>办理状态</dt><dd><span class="state" id="state" data-state="{escape(view.state, quote=True)}">'
        f"{escape(STATE_NAMES.get(view.state, view.state))}</span></dd>"
        f'<dt>承办单位</dt><dd id="department">{escape(department)}</dd>'
        + (f"<dt>最近更新</dt><dd>{_local(view.changed_at)}</dd>" if view.changed_at else "")
        + f'{note}</dl></div><div class="card"><a href="/portal">返回提交页面</a></div>'
    )
    return _page(f"办理进度 {view.number}", body)


def message_page(title: str, text: str) -> str:
    """A refusal or a not-found, said plainly, with the way back."""
    body = (
        f'<div class="alert" role="alert" id="refusal"><strong>{escape(title)}</strong><p>{escape(text)}</p></div>'
        '<div class="card"><a href="/portal">返回提交页面</a></div>'
    )
    return _page(title, body)
