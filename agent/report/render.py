"""The month's state as one self-contained HTML document (Jinja2, autoescaped, translated).

Everything the page needs is inside it: the styles, the charts as inline SVG, no scripts,
no fonts or images from elsewhere (a Content-Security-Policy of `default-src 'none'` makes
a browser refuse anything else). Nothing in it depends on the time of rendering, so the
same state renders the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.report import charts
from agent.report.charts import Series
from agent.report.i18n import Formats, translations
from agent.report.state import MonthState

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "service-report.html"


def environment(language: str) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, extensions=["jinja2.ext.i18n"],
                      keep_trailing_newline=True)
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_html(state: MonthState, language: str) -> bytes:
    tr = translations(language)
    _ = tr.gettext
    f = Formats(language)
    months = [f.month_short(m) for m in state.months]
    month_axis = _("Month")

    active = charts.line_chart(
        "active", title=_("Active users, last 12 months"), x_label=month_axis,
        y_label=_("Users"), x=months, integers=True, y_format=lambda v: f.number(v),
        series=[Series(_("Active"), [p["active"] for p in state.active_trend]),
                Series(_("E5"), [p["e5"] for p in state.active_trend]),
                Series(_("Exchange only"), [p["exchange_only"] for p in state.active_trend])])
    devices = charts.line_chart(
        "devices", title=_("Devices compliant, encrypted, escrowed"), x_label=month_axis,
        y_label=_("Percent of devices"), x=months, y_max=105,
        y_format=lambda v: f.number(v),
        series=[Series(_("Compliant"), [p["compliant"] for p in state.device_trend]),
                Series(_("Encrypted"), [p["encrypted"] for p in state.device_trend]),
                Series(_("Escrowed"), [p["escrowed"] for p in state.device_trend])])
    score = charts.line_chart(
        "score", title=_("Microsoft Secure Score, last 12 months"), x_label=month_axis,
        y_label=_("Percent of maximum"), x=months, y_max=105, y_format=lambda v: f.number(v),
        series=[Series(_("Secure Score"), [p["percent"] for p in state.score_trend])])

    tables = {
        "active": [(f.month(p["month"]), f.number(p["active"]), f.number(p["e5"]),
                    f.number(p["exchange_only"])) for p in state.active_trend],
        "devices": [(f.month(p["month"]), f.number(p["compliant"], 1),
                     f.number(p["encrypted"], 1), f.number(p["escrowed"], 1))
                    for p in state.device_trend],
        "score": [(f.month(p["month"]), f.points(p["current"]), f.points(p["max"]),
                   f.number(p["percent"], 1)) for p in state.score_trend],
    }
    score_change = None
    if state.score and state.score_previous:
        score_change = round(float(state.score["current"])
                             - float(state.score_previous["current"]), 2)
    context: dict[str, Any] = {
        "s": state, "f": f, "lang": language,
        "charts": {"active": active, "devices": devices, "score": score},
        "tables": tables,
        "score_change": score_change,
        "months_before": state.score_previous["date"][:7] if state.score_previous else "",
        "categories": {"e5": _("E5"), "exchange-only": _("Exchange only"), "other": _("other")},
        "severities": {"high": _("high"), "medium": _("medium"), "low": _("low"),
                       "info": _("info")},
        "decision_kinds": {"veto": _("veto"), "lift": _("veto lifted"),
                           "approve": _("approval")},
        "score_categories": {"Identity": _("Identity"), "Data": _("Data"),
                             "Device": _("Device"), "Apps": _("Apps"),
                             "Infrastructure": _("Infrastructure")},
    }
    html = environment(language).get_template(TEMPLATE).render(context)
    return html.encode("utf-8")
