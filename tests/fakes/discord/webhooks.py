"""Interaction routes: the first response (POST /interactions/{id}/{token}/callback) and the
interaction webhook's messages (@original edits, followups, deletes), with Discord's rules:
3 seconds to respond, one first response, a 15-minute token."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord import messages
from tests.fakes.discord.limits import Problem, form_errors
from tests.fakes.discord.records import InteractionRecord, Snapshot
from tests.fakes.discord.state import EPHEMERAL, LOADING, Message
from tests.fakes.discord.wire import (
    API,
    ARRIVED,
    Body,
    Refused,
    json_response,
    no_content,
    read_body,
)

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

APPLICATION_COMMAND, COMPONENT = 2, 3
REPLY, DEFERRED_REPLY, DEFERRED_UPDATE, UPDATE, MODAL = 4, 5, 6, 7, 9
ALLOWED_RESPONSES = {
    APPLICATION_COMMAND: {REPLY, DEFERRED_REPLY, MODAL},
    COMPONENT: {REPLY, DEFERRED_REPLY, DEFERRED_UPDATE, UPDATE, MODAL},
}
CHAT_INPUT_COMMAND_MESSAGE = 20
WEBHOOK_MESSAGE = API + "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"


class Webhooks:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(
                API + "/interactions/{interaction_id}/{interaction_token}/callback", self.callback
            ),
            web.get(WEBHOOK_MESSAGE, self.get_message),
            web.patch(WEBHOOK_MESSAGE, self.edit_message),
            web.delete(WEBHOOK_MESSAGE, self.delete_message),
            web.post(API + "/webhooks/{webhook_id}/{webhook_token}", self.followup),
        ]

    # -- the first response ----------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        fake = self.fake
        record = fake.interactions.get(request.match_info["interaction_token"])
        if record is None or str(record.id) != request.match_info["interaction_id"]:
            raise Refused(404, 10062, "Unknown interaction")
        body = await read_body(request, upload_delay=self.fake.upload_delay)
        # No await from here on: two racing first responses cannot both be accepted.
        if record.acknowledged:
            raise Refused(400, 40060, "Interaction has already been acknowledged.")
        deadline = fake.ack_deadline
        if deadline is not None and request[ARRIVED] - record.created > deadline:
            raise Refused(404, 10062, "Unknown interaction")
        kind = body.payload.get("type")
        data: dict[str, Any] = body.payload.get("data") or {}
        if kind not in ALLOWED_RESPONSES.get(record.type, set()):
            problem = Problem(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid type")
            raise Refused(400, 50035, "Invalid Form Body", form_errors([problem]))
        message = self._respond(record, kind, body, data)
        record.response_type = kind
        if fake.answer_delay:  # accepted and shown; the answer is slow to get back to the bot
            fake.changed.notify()
            await asyncio.sleep(fake.answer_delay)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return no_content()
        interaction: dict[str, Any] = {"id": str(record.id), "type": record.type}
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            interaction |= {
                "response_message_id": str(message.id),
                "response_message_loading": message.loading,
                "response_message_ephemeral": message.ephemeral,
            }
            if kind in (REPLY, UPDATE):
                resource["message"] = message.to_json(record.app_id)
        return json_response({"interaction": interaction, "resource": resource})

    def _respond(
        self, record: InteractionRecord, kind: int, body: Body, data: dict[str, Any]
    ) -> Message | None:
        """Apply a first response; returns the message it made or changed."""
        fake = self.fake
        if kind == MODAL:
            return None
        if kind == DEFERRED_UPDATE:
            record.original = record.message
            return record.original
        if kind == UPDATE:
            message = record.message
            assert message is not None  # components always sit on a message
            change = messages.check(
                body,
                limits=fake.message_limits,
                upload_limit=record.guild.upload_limit,
                current=message,
                where=("data",),
                payload=data,
            )
            messages.apply(fake.world, message, change, editing=True)
        elif kind == REPLY:
            change = messages.check(
                body,
                limits=fake.message_limits,
                upload_limit=record.guild.upload_limit,
                where=("data",),
                payload=data,
            )
            message = self._new_message(record, followup=False)
            messages.apply(fake.world, message, change, editing=False)
        else:  # a deferred reply: "thinking…" until edited or followed up
            message = self._new_message(record, followup=False)
            message.flags = ((data.get("flags") or 0) & EPHEMERAL) | LOADING
        record.original = message
        self._snapshot(record)
        return message

    # -- the interaction's webhook ---------------------------------------------------------

    async def get_message(self, request: web.Request) -> web.Response:
        record = self._record(request)
        return json_response(self._message(request, record).to_json(record.app_id))

    async def edit_message(self, request: web.Request) -> web.Response:
        record = self._record(request)
        body = await read_body(request, upload_delay=self.fake.upload_delay)
        message = self._message(request, record)
        change = messages.check(
            body,
            limits=self.fake.message_limits,
            upload_limit=record.guild.upload_limit,
            current=message,
        )
        messages.apply(self.fake.world, message, change, editing=True)
        if message is record.original:
            self._snapshot(record)
        return json_response(message.to_json(record.app_id))

    async def delete_message(self, request: web.Request) -> web.Response:
        record = self._record(request)
        self._message(request, record).deleted = True
        return no_content()

    async def followup(self, request: web.Request) -> web.Response:
        """A followup; the first one after a deferred reply replaces its "thinking" message
        (keeping the ephemerality chosen when deferring), as Discord does."""
        record = self._record(request)
        if not record.acknowledged:
            raise Refused(404, 10015, "Unknown Webhook")
        body = await read_body(request, upload_delay=self.fake.upload_delay)
        original = record.original
        replaces = original is not None and original.loading and not original.deleted
        change = messages.check(
            body,
            limits=self.fake.message_limits,
            upload_limit=record.guild.upload_limit,
            current=original if replaces else None,
            payload={k: v for k, v in body.payload.items() if k != "flags"} if replaces else None,
        )
        if replaces and original is not None:
            messages.apply(self.fake.world, original, change, editing=True)
            self._snapshot(record)
            message = original
        else:
            message = self._new_message(record, followup=True)
            messages.apply(self.fake.world, message, change, editing=False)
            record.followups.append(message)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return no_content()
        return json_response(message.to_json(record.app_id))

    # -- helpers ---------------------------------------------------------------------------

    def _record(self, request: web.Request) -> InteractionRecord:
        """The interaction behind a webhook token: unknown → 10015, expired → 50027."""
        record = self.fake.interactions.get(request.match_info["webhook_token"])
        if record is None or str(record.app_id) != request.match_info["webhook_id"]:
            raise Refused(404, 10015, "Unknown Webhook")
        lifetime = self.fake.token_lifetime
        expired = lifetime is not None and request[ARRIVED] - record.created > lifetime
        if expired or record.token_revoked:
            raise Refused(401, 50027, "Invalid Webhook Token")
        return record

    def _message(self, request: web.Request, record: InteractionRecord) -> Message:
        reference = request.match_info["message_id"]
        if reference == "@original":
            message = record.original
        else:
            candidates = [record.original, *record.followups]
            message = next(
                (m for m in candidates if m is not None and str(m.id) == reference), None
            )
        if message is None or message.deleted:
            raise Refused(404, 10008, "Unknown Message")
        return message

    def _new_message(self, record: InteractionRecord, *, followup: bool) -> Message:
        app = self.fake.app_by_id(record.app_id)
        message = self.fake.world.add_message(
            record.channel,
            app.user,
            app_id=app.id,
            webhook_id=app.id,
            type=CHAT_INPUT_COMMAND_MESSAGE if record.type == APPLICATION_COMMAND else 0,
        )
        message.interaction_metadata = self._metadata(record, followup=followup)
        if record.type == APPLICATION_COMMAND:
            message.interaction = {
                "id": str(record.id),
                "type": record.type,
                "name": record.payload["data"]["name"],
                "user": record.member.user.to_json(),
            }
        return message

    def _metadata(self, record: InteractionRecord, *, followup: bool) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "user": record.member.user.to_json(),
            "authorizing_integration_owners": {"0": str(record.guild.id)},
        }
        if record.type == APPLICATION_COMMAND:
            metadata["name"] = record.payload["data"]["name"]
            metadata["command_type"] = 1
        if record.message is not None:
            metadata["interacted_message_id"] = str(record.message.id)
        if followup and record.original is not None:
            metadata["original_response_message_id"] = str(record.original.id)
        return metadata

    def _snapshot(self, record: InteractionRecord) -> None:
        if record.original is not None:
            record.history.append(Snapshot.of(record.original, self.fake.now()))
