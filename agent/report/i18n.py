"""The report's languages: Babel message catalogs (`locale/<lang>/LC_MESSAGES/messages.po`)
and Babel's locale data for numbers and dates.

The `.po` files are compiled in memory when first used (babel's `read_po` + `write_mo`), so
a fresh clone needs no build step and no compiled `.mo` file is ever out of date. Source
strings are English; `en` has its own catalog so both languages are real catalogs.
Extract new strings with `pybabel extract -F agent/report/babel.cfg -o messages.pot .`
and merge them with `pybabel update -i messages.pot -d agent/report/locale`.
"""

from __future__ import annotations

import io
from datetime import date
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES: dict[str, str] = {"nl": "nl_NL", "en": "en_GB"}  # report language -> Babel locale
DEFAULT_LANGUAGE = "nl"
NONE = "\u2013"  # en dash: no value
MINUS = "\u2212"


@cache
def translations(language: str) -> Translations:
    """The compiled catalog of `language` (one of LANGUAGES)."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=LANGUAGES[language])
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain="messages")


class Formats:
    """Numbers, percentages and dates as the report's locale writes them."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.locale = Locale.parse(LANGUAGES[language])

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return NONE
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return str(format_decimal(value, format=pattern, locale=self.locale))

    def points(self, value: float | int | None) -> str:
        """A score: one decimal at most (Secure Score points are often whole)."""
        if value is None:
            return NONE
        return str(format_decimal(value, format="#,##0.#", locale=self.locale))

    def percent(self, value: float | int | None) -> str:
        if value is None:
            return NONE
        return f"{format_decimal(value, format='0.0', locale=self.locale)}\u00a0%"

    def signed(self, value: float | int | None) -> str:
        if value is None:
            return NONE
        text = self.points(abs(value))
        return ("+" if value > 0 else MINUS if value < 0 else "\u00b1") + text

    def day(self, value: date | str | None) -> str:
        if not value:
            return NONE
        day = date.fromisoformat(value[:10]) if isinstance(value, str) else value
        return str(format_date(day, format="long", locale=self.locale))

    def month(self, value: str) -> str:
        """`2026-11` -> "november 2026" / "November 2026"."""
        year, month = (int(part) for part in value.split("-"))
        return str(format_date(date(year, month, 1), format="LLLL y", locale=self.locale))

    def month_short(self, value: str) -> str:
        """`2026-11` -> "nov. 2026" style axis labels ("nov 26")."""
        year, month = (int(part) for part in value.split("-"))
        return str(format_date(date(year, month, 1), format="LLL yy", locale=self.locale))
