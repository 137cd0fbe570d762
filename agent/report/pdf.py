"""The report as PDF: the same HTML laid out on A4 by WeasyPrint (the optional `pdf` extra).

WeasyPrint rather than headless Chromium: it is a Python package (`pip install -e
'.[pdf]'`), starts no browser process, implements CSS Paged Media (`@page` size, margins and
page counters in the footer), and renders the inline SVG charts. It needs the system's
Pango library, which Debian and Ubuntu install with most desktops and servers that print.
"""

from __future__ import annotations

import logging

from agent.errors import UsageError

EXTRA = "pdf"


def require_weasyprint() -> None:
    """UsageError (exit 2) naming the extra when WeasyPrint or its Pango cannot load."""
    html_to_pdf(None)


def html_to_pdf(html: bytes | None) -> bytes:
    # WeasyPrint and fontTools log every layout step and every SVG style property the HTML
    # stylesheet parser passes over (the SVG renderer reads them itself): keep real problems
    # (set before the import: it parses its own stylesheets then)
    for name in ("weasyprint", "weasyprint.progress", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: the Pango library is missing
        raise UsageError(
            f"--format pdf needs the optional extra '{EXTRA}': pip install 'dap-agent[{EXTRA}]' "
            f"(in a checkout: .venv/bin/pip install -e '.[{EXTRA}]'); it also needs the "
            f"system's Pango library ({type(exc).__name__}: {exc})") from None
    if html is None:
        return b""
    pdf: bytes = HTML(string=html.decode("utf-8")).write_pdf()
    return pdf
