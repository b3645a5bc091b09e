"""The bot-token REST routes discord.py uses: login, application, command sync, channels and
their messages, guilds and members, plus the attachment files the fake serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from tests.fakes.discord import messages
from tests.fakes.discord.commands import sync_problems
from tests.fakes.discord.limits import form_errors
from tests.fakes.discord.state import EPHEMERAL, Application, Channel, Guild, Message
from tests.fakes.discord.wire import (
    API,
    APP,
    UNHANDLED,
    Refused,
    json_response,
    no_content,
    read_body,
)

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

CHANNEL_MESSAGE = API + "/channels/{channel_id}/messages/{message_id}"
OWN_REACTION = CHANNEL_MESSAGE + "/reactions/{emoji}/@me"
MAX_HISTORY = 100


class Rest:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[web.RouteDef]:
        commands = API + "/applications/{application_id}/commands"
        guild_commands = API + "/applications/{application_id}/guilds/{guild_id}/commands"
        return [
            web.get(API + "/users/@me", self.me),
            web.get(API + "/users/{user_id}", self.user),
            web.get(API + "/gateway", self.gateway),
            web.get(API + "/gateway/bot", self.gateway_bot),
            web.get(API + "/oauth2/applications/@me", self.application),
            web.get(API + "/applications/@me", self.application),
            web.put(commands, self.put_commands),
            web.get(commands, self.get_commands),
            web.put(guild_commands, self.put_commands),
            web.get(guild_commands, self.get_commands),
            web.get(API + "/channels/{channel_id}", self.channel),
            web.get(API + "/channels/{channel_id}/messages", self.history),
            web.post(API + "/channels/{channel_id}/messages", self.send),
            web.get(CHANNEL_MESSAGE, self.get_message),
            web.patch(CHANNEL_MESSAGE, self.edit_message),
            web.delete(CHANNEL_MESSAGE, self.delete_message),
            web.put(OWN_REACTION, self.react),
            web.delete(OWN_REACTION, self.unreact),
            web.get(API + "/guilds/{guild_id}", self.guild),
            web.get(API + "/guilds/{guild_id}/channels", self.guild_channels),
            web.get(API + "/guilds/{guild_id}/roles", self.guild_roles),
            web.get(API + "/guilds/{guild_id}/members/{user_id}", self.member),
            web.get("/attachments/{attachment_id}/{filename}", self.attachment),
            web.route("*", API + "/{tail:.*}", self.unhandled, name=UNHANDLED),
        ]

    async def unhandled(self, request: web.Request) -> web.Response:
        """Anything the fake does not implement: Discord's 404, noted for tests to assert on."""
        self.fake.unhandled.append(f"{request.method} {request.path}")
        raise Refused(404, 0, "404: Not Found")

    # -- login and the application ---------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return json_response(_app(request).user.to_json())

    async def user(self, request: web.Request) -> web.Response:
        user = self.fake.world.users.get(_snowflake(request, "user_id"))
        if user is None:
            raise Refused(404, 10013, "Unknown User")
        return json_response(user.to_json())

    async def gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        """Where to connect, how many shards to run and how many IDENTIFYs are left
        (https://discord.com/developers/docs/events/gateway#get-gateway-bot)."""
        return json_response(
            {
                "url": self.fake.gateway_url,
                "shards": self.fake.shard_count_recommended,
                "session_start_limit": _app(request).session_start_limit.to_json(),
            }
        )

    async def application(self, request: web.Request) -> web.Response:
        return json_response(_app(request).to_json())

    async def put_commands(self, request: web.Request) -> web.Response:
        app = self._own_application(request)
        guild_id = self._command_guild(request)
        payload = (await read_body(request)).payload
        problems = sync_problems(payload)
        if problems:
            raise Refused(400, 50035, "Invalid Form Body", form_errors(problems))
        return json_response(self.fake.commands_of(app).overwrite(app.id, guild_id, payload))

    async def get_commands(self, request: web.Request) -> web.Response:
        app = self._own_application(request)
        guild_id = self._command_guild(request)
        return json_response(self.fake.commands_of(app).listed(guild_id))

    def _own_application(self, request: web.Request) -> Application:
        app = _app(request)
        if request.match_info["application_id"] != str(app.id):
            raise Refused(403, 50001, "Missing Access")
        return app

    def _command_guild(self, request: web.Request) -> int | None:
        if "guild_id" not in request.match_info:
            return None
        return self._guild(request).id

    # -- channels and messages -------------------------------------------------------------

    async def channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).to_json())

    async def history(self, request: web.Request) -> web.Response:
        """Newest first, like Discord; `before`/`after` are message ids."""
        channel = self._channel(request)
        limit = min(int(request.query.get("limit", 50)), MAX_HISTORY)
        found = channel.visible_messages()
        if "before" in request.query:
            found = [m for m in found if m.id < int(request.query["before"])]
        if "after" in request.query:
            found = [m for m in found if m.id > int(request.query["after"])][:limit]
        viewer = _app(request).user.id
        return json_response([m.to_json(viewer) for m in reversed(found)][:limit])

    async def send(self, request: web.Request) -> web.Response:
        body = await read_body(request, upload_delay=self.fake.upload_delay)
        channel = self._channel(request)
        app = _app(request)
        payload = {k: v for k, v in body.payload.items() if k != "flags"}
        payload["flags"] = (body.payload.get("flags") or 0) & ~EPHEMERAL  # not in channels
        change = messages.check(
            body,
            limits=self.fake.message_limits,
            upload_limit=channel.guild.upload_limit,
            payload=payload,
        )
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            for existing in channel.messages.values():
                if existing.nonce == str(nonce) and existing.author is app.user:
                    return json_response(existing.to_json(app.user.id))  # sent once only
        message = self.fake.world.add_message(channel, app.user, app_id=app.id)
        message.nonce = None if nonce is None else str(nonce)
        messages.apply(self.fake.world, message, change, editing=False)
        return json_response(message.to_json(app.user.id))

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(self._message(request).to_json(_app(request).user.id))

    async def edit_message(self, request: web.Request) -> web.Response:
        body = await read_body(request, upload_delay=self.fake.upload_delay)
        message = self._message(request)
        app = _app(request)
        if message.author is not app.user:
            raise Refused(403, 50005, "Cannot edit a message authored by another user")
        change = messages.check(
            body,
            limits=self.fake.message_limits,
            upload_limit=message.channel.guild.upload_limit,
            current=message,
        )
        messages.apply(self.fake.world, message, change, editing=True)
        return json_response(message.to_json(app.user.id))

    async def delete_message(self, request: web.Request) -> web.Response:
        self._message(request).deleted = True
        return no_content()

    async def react(self, request: web.Request) -> web.Response:
        message = self._message(request)
        message.reactions.setdefault(request.match_info["emoji"], set()).add(_app(request).user.id)
        return no_content()

    async def unreact(self, request: web.Request) -> web.Response:
        message = self._message(request)
        emoji = request.match_info["emoji"]
        users = message.reactions.get(emoji, set())
        users.discard(_app(request).user.id)
        if not users:
            message.reactions.pop(emoji, None)
        return no_content()

    def _channel(self, request: web.Request) -> Channel:
        channel = self.fake.world.channels.get(_snowflake(request, "channel_id"))
        if channel is None:
            raise Refused(404, 10003, "Unknown Channel")
        return channel

    def _message(self, request: web.Request) -> Message:
        """A message as the channel routes see it: ephemeral ones are not there."""
        channel = self._channel(request)
        message = channel.messages.get(_snowflake(request, "message_id"))
        if message is None or message.deleted or message.flags & EPHEMERAL:
            raise Refused(404, 10008, "Unknown Message")
        return message

    # -- guilds ----------------------------------------------------------------------------

    async def guild(self, request: web.Request) -> web.Response:
        return json_response(self._guild(request).to_json())

    async def guild_channels(self, request: web.Request) -> web.Response:
        return json_response([c.to_json() for c in self._guild(request).channels])

    async def guild_roles(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([guild.everyone.to_json(), *(r.to_json() for r in guild.roles)])

    async def member(self, request: web.Request) -> web.Response:
        member = self._guild(request).member(_snowflake(request, "user_id"))
        if member is None:
            raise Refused(404, 10007, "Unknown Member")
        return json_response(member.to_json())

    def _guild(self, request: web.Request) -> Guild:
        guild = self.fake.world.guilds.get(_snowflake(request, "guild_id"))
        if guild is None:
            raise Refused(404, 10004, "Unknown Guild")
        return guild

    # -- files -----------------------------------------------------------------------------

    async def attachment(self, request: web.Request) -> web.Response:
        attachment = self.fake.world.attachments.get(_snowflake(request, "attachment_id"))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404)
        return web.Response(body=attachment.data, content_type=attachment.content_type)


def _app(request: web.Request) -> Application:
    return request[APP]


def _snowflake(request: web.Request, key: str) -> int:
    value = request.match_info[key]
    if not value.isdigit():
        problem = {
            key: {"_errors": [{"code": "NUMBER_TYPE_COERCE", "message": "Not a snowflake."}]}
        }
        raise Refused(400, 50035, "Invalid Form Body", problem)
    return int(value)
