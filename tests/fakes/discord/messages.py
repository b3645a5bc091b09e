"""How a message body becomes a message, for every route that writes one: checked against
Discord's limits first, then applied (attachments kept, replaced or added; edits merged)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tests.fakes.discord.limits import MessageLimits, Problem, form_errors, is_empty
from tests.fakes.discord.records import Upload
from tests.fakes.discord.state import LOADING, Attachment, Message, World
from tests.fakes.discord.wire import Body, Refused

EDITABLE = ("content", "embeds", "components")  # what an edit may leave out and keep


@dataclass(frozen=True)
class Change:
    """A body that passed Discord's checks, and the message's attachments after it."""

    payload: dict[str, Any]
    attachments: list[Attachment | Upload]


def check(
    body: Body,
    *,
    limits: MessageLimits | None,
    upload_limit: int,
    current: Message | None = None,
    where: tuple[str, ...] = (),
    payload: dict[str, Any] | None = None,
) -> Change:
    """Refuse what Discord refuses: 40005 for a file over the guild's upload limit, 50035 for
    limits, 50006 for a message left with nothing to show. `where` prefixes error paths
    (an interaction callback's message is under "data"); `payload` overrides the body's."""
    payload = body.payload if payload is None else payload
    attachments = _attachments(payload, body.files, current, where)
    if any(isinstance(a, Upload) and len(a.data) > upload_limit for a in attachments):
        raise Refused(413, 40005, "Request entity too large")
    merged = payload
    if current is not None:
        merged = {key: getattr(current, key) for key in EDITABLE} | payload
        merged["flags"] = current.flags
    if limits is not None:
        problems = limits.problems(merged, len(attachments))
        if problems:
            prefixed = [Problem((*where, *p.path), p.code, p.message) for p in problems]
            raise Refused(400, 50035, "Invalid Form Body", form_errors(prefixed))
    if is_empty(merged, len(attachments)):
        raise Refused(400, 50006, "Cannot send an empty message")
    return Change(payload, attachments)


def _attachments(
    payload: dict[str, Any],
    files: dict[int, Upload],
    current: Message | None,
    where: tuple[str, ...],
) -> list[Attachment | Upload]:
    """The attachments after this body: `attachments` lists existing ones to keep (by id) and
    new uploads (by file index); without it, uploads are added to what is there."""
    existing: list[Attachment] = current.attachments if current is not None else []
    listed = payload.get("attachments")
    if listed is None:
        return [*existing, *files.values()]
    kept = {str(a.id): a for a in existing}
    result: list[Attachment | Upload] = []
    for index, entry in enumerate(listed):
        key = str(entry.get("id"))
        if key in kept:
            result.append(kept[key])
        elif key.isdigit() and int(key) in files:
            upload = files[int(key)]
            result.append(replace(upload, filename=entry.get("filename") or upload.filename))
        else:
            problem = Problem(
                (*where, "attachments", str(index), "id"),
                "ATTACHMENT_NOT_FOUND",
                "Attachment data not found",
            )
            raise Refused(400, 50035, "Invalid Form Body", form_errors([problem]))
    return result


def apply(world: World, message: Message, change: Change, *, editing: bool) -> None:
    """Write a checked change: an edit also ends a deferred reply's "thinking" state."""
    payload = change.payload
    if "content" in payload:
        message.content = payload["content"] or ""
    if "embeds" in payload:
        message.embeds = payload["embeds"] or []
    if "components" in payload:
        message.components = payload["components"] or []
    message.attachments = [
        a if isinstance(a, Attachment) else world.add_attachment(a.filename, a.data)
        for a in change.attachments
    ]
    if editing:
        message.edited_at = datetime.now(UTC)
        message.flags &= ~LOADING
    elif "flags" in payload:
        message.flags |= payload["flags"] or 0
