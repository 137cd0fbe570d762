"""The two channels: mail through Graph (agent.graph.mail) and a webhook (JSON POST).

`teams` wraps the message in an Adaptive Card message, the payload a Teams Workflows
"when a webhook request is received" flow posts to a channel
(https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook).
The webhook URL is a credential (its path or query carries the signature): it is never
logged, and errors name only the status or the kind of failure.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.graph.client import GraphClient
from agent.graph.mail import send_mail
from agent.notify.messages import Message

WEBHOOK_TIMEOUT = httpx.Timeout(15.0, connect=10.0)


class ChannelError(Exception):
    """A channel did not take the message; the text is safe to log and audit."""


async def by_mail(graph: GraphClient, sender: str, to: list[str], message: Message) -> str:
    """Returns Graph's request id."""
    sent = await send_mail(graph, sender=sender, to=to, subject=f"[dap-agent] {message.title}",
                           text=message.text())
    return sent.request_id or ""


def teams_card(message: Message) -> dict[str, Any]:
    """An Adaptive Card (1.4: what Teams renders from Workflows) inside a message."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "weight": "Bolder", "size": "Medium",
         "wrap": True, "color": "Attention" if message.severity == "high" else "Default"},
    ]
    items = [f"- {item}" for item in message.items]
    if message.omitted:
        items.append(f"- and {message.omitted} more (see the run report)")
    if items:
        body.append({"type": "TextBlock", "text": "\n".join(items), "wrap": True})
    facts = [*message.facts, ("audit checkpoint", message.checkpoint)]
    body.append({"type": "FactSet",
                 "facts": [{"title": label, "value": value} for label, value in facts]})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard", "version": "1.4", "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
         "content": card}]}


def webhook_payload(message: Message, fmt: str) -> dict[str, Any]:
    return teams_card(message) if fmt == "teams" else message.as_json()


async def by_webhook(url: str, fmt: str, message: Message,
                     transport: httpx.AsyncBaseTransport | None = None) -> str:
    """POST the message; returns the HTTP status. No redirects (the body would follow)."""
    from agent.graph.connect import _tls_context  # the organisation's CA bundle, if any

    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False,
                                     verify=_tls_context(), trust_env=True,
                                     transport=transport) as http:
            response = await http.post(url, json=webhook_payload(message, fmt),
                                       headers={"User-Agent": "dap-agent"})
    except httpx.TimeoutException:
        raise ChannelError("webhook: timed out") from None
    except httpx.HTTPError as exc:  # str(exc) may name the URL: only its kind is said
        raise ChannelError(f"webhook: connection failed ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise ChannelError(f"webhook: answered HTTP {response.status_code}")
    return str(response.status_code)
