"""Verification and password-reset mail over SMTP."""

from __future__ import annotations

import html
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from backpack.errors import BadRequest, Unavailable


def _message(sender: str, to: str, subject: str, text: str, html_body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


def require_smtp(smtp: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if smtp is None:
        raise BadRequest(
            "This backpack cannot send mail: SMTP is not configured in its settings.",
            {"setting": "smtp"},
        )
    return smtp


async def send_mail(
    smtp: Mapping[str, Any], to: str, subject: str, text: str, html_body: str
) -> None:
    tls = smtp.get("tls", "starttls")
    try:
        await aiosmtplib.send(
            _message(smtp["sender"], to, subject, text, html_body),
            hostname=smtp["host"],
            port=smtp["port"],
            username=smtp.get("username") or None,
            password=smtp.get("password") or None,
            use_tls=tls == "tls",
            start_tls=tls == "starttls",
            timeout=20,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise Unavailable(f"The mail server did not take the message: {exc}.") from None


def _wrap(title: str, paragraph: str, link: str, action: str) -> tuple[str, str]:
    text = f"{title}\n\n{paragraph}\n\n{action}: {link}\n"
    body = (
        "<!doctype html><html><body style='font-family:system-ui,sans-serif'>"
        f"<h2>{html.escape(title)}</h2><p>{html.escape(paragraph)}</p>"
        f"<p><a href='{html.escape(link, quote=True)}'>{html.escape(action)}</a></p>"
        f"<p style='color:#666;font-size:12px'>{html.escape(link)}</p></body></html>"
    )
    return text, body


def verification_mail(link: str) -> tuple[str, str, str]:
    subject = "Confirm your email address"
    text, body = _wrap(
        subject,
        "Open the link below to confirm this address. It works once, for 24 hours.",
        link,
        "Confirm my address",
    )
    return subject, text, body


def test_mail() -> tuple[str, str, str]:
    subject = "Backpack: a test mail"
    text = "This backpack can send mail: verification and password-reset mails will arrive.\n"
    body = (
        "<!doctype html><html><body style='font-family:system-ui,sans-serif'>"
        f"<p>{html.escape(text.strip())}</p></body></html>"
    )
    return subject, text, body


def reset_mail(link: str) -> tuple[str, str, str]:
    subject = "Reset your password"
    text, body = _wrap(
        subject,
        "Someone (hopefully you) asked to reset the password of this account. "
        "The link works once, for 30 minutes. If it was not you, ignore this mail.",
        link,
        "Choose a new password",
    )
    return subject, text, body
