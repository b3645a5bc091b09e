"""Application commands: what each bot synced (globally and per guild), checked as Discord
checks a bulk overwrite, and the `data` a member's Discord client sends when running one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord.limits import Problem
from tests.fakes.discord.state import Channel, Member, Role, User, World, snowflake

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)
CHAT_INPUT = 1
NAME = re.compile(r"^[-_\w]{1,32}$")
MAX_COMMANDS, MAX_OPTIONS, MAX_CHOICES = 100, 25, 25


@dataclass
class AppCommands:
    """One application's commands as Discord stores them (with ids, versions, guild ids)."""

    global_: list[dict[str, Any]] = field(default_factory=list)
    guilds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def overwrite(
        self, app_id: int, guild_id: int | None, commands: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Bulk overwrite, as `tree.sync()` does: ids survive for commands kept by name."""
        old = {(c["name"], c["type"]): c for c in self.listed(guild_id)}
        stored = []
        for command in commands:
            kind = command.get("type", CHAT_INPUT)
            previous = old.get((command["name"], kind))
            entry = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": previous["id"] if previous else str(snowflake()),
                "application_id": str(app_id),
                "type": kind,
                "version": str(snowflake()),
            }
            permissions = entry["default_member_permissions"]
            if permissions is not None:  # clients send a number; Discord keeps a string
                entry["default_member_permissions"] = str(permissions)
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        if guild_id is None:
            self.global_ = stored
        else:
            self.guilds[guild_id] = stored
        return stored

    def listed(self, guild_id: int | None) -> list[dict[str, Any]]:
        return self.global_ if guild_id is None else self.guilds.get(guild_id, [])

    def find(self, guild_id: int, name: str) -> dict[str, Any] | None:
        """What a member in this guild runs as `/name`: the guild's command first."""
        for command in (*self.guilds.get(guild_id, []), *self.global_):
            if command["name"] == name and command["type"] == CHAT_INPUT:
                return command
        return None


def sync_problems(commands: Any) -> list[Problem]:
    """What Discord refuses in a bulk overwrite of commands."""
    if not isinstance(commands, list):
        return [Problem((), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType.")]
    problems: list[Problem] = []
    if len(commands) > MAX_COMMANDS:
        problems.append(Problem((), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_COMMANDS} or fewer."))
    seen: set[tuple[str, int]] = set()
    for index, command in enumerate(commands):
        at = (str(index),)
        kind = command.get("type", CHAT_INPUT)
        key = (command.get("name", ""), kind)
        if key in seen:
            problems.append(Problem(at, "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate name"))
        seen.add(key)
        problems += _named_problems(at, command, chat_input=kind == CHAT_INPUT)
        problems += _options_problems(at, command.get("options") or [], depth=0)
    return problems


def _named_problems(
    at: tuple[str, ...], item: dict[str, Any], *, chat_input: bool
) -> list[Problem]:
    """Slash commands and options: lowercase names without spaces, 1-100 character
    descriptions. User and message commands: any 1-32 character name, no description."""
    problems = []
    name = item.get("name", "")
    valid = NAME.match(name) and name == name.lower() if chat_input else 1 <= len(name) <= 32
    if not valid:
        problems.append(Problem((*at, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Invalid name"))
    description = item.get("description") or ""
    if not (1 <= len(description) <= 100 if chat_input else description == ""):
        problems.append(Problem((*at, "description"), "BASE_TYPE_BAD_LENGTH", "Invalid length."))
    return problems


def _options_problems(
    at: tuple[str, ...], options: list[dict[str, Any]], depth: int
) -> list[Problem]:
    problems = []
    if len(options) > MAX_OPTIONS:
        problems.append(Problem((*at, "options"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer."))
    optional_seen = False
    for index, option in enumerate(options):
        where = (*at, "options", str(index))
        problems += _named_problems(where, option, chat_input=True)
        kind = option.get("type")
        if kind in (SUB_COMMAND, SUB_COMMAND_GROUP):
            if depth >= 2 or (kind == SUB_COMMAND_GROUP and depth >= 1):
                problems.append(Problem(where, "APPLICATION_COMMAND_TOO_DEEP", "Too deep"))
            problems += _options_problems(where, option.get("options") or [], depth + 1)
            continue
        if option.get("required"):
            if optional_seen:
                problems.append(
                    Problem(
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        else:
            optional_seen = True
        if len(option.get("choices") or []) > MAX_CHOICES:
            problems.append(
                Problem((*where, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")
            )
    return problems


def command_data(
    world: World, command: dict[str, Any], path: list[str], values: dict[str, Any], member: Member
) -> dict[str, Any]:
    """`data` of the INTERACTION_CREATE for `/name sub ... option:value`, typed as synced.

    Raises what Discord's client would not let a member do: an unknown subcommand or option,
    a missing subcommand or required option, or a value of the wrong type.
    """
    definitions = command.get("options") or []
    top: list[dict[str, Any]] = []
    target = top
    for word in path:
        definition = _definition(definitions, word, command["name"])
        if definition["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            raise LookupError(f"{word!r} is an option of /{command['name']}, not a subcommand")
        entry: dict[str, Any] = {"type": definition["type"], "name": word, "options": []}
        target.append(entry)
        target, definitions = entry["options"], definition.get("options") or []
    if any(d["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for d in definitions):
        names = [d["name"] for d in definitions]
        raise LookupError(f"/{command['name']} {' '.join(path)} needs a subcommand: {names}")
    resolved: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        definition = _definition(definitions, name, command["name"])
        target.append(
            {
                "type": definition["type"],
                "name": name,
                "value": _option_value(world, member, definition, value, resolved),
            }
        )
    missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in values]
    if missing:
        raise ValueError(f"/{command['name']} needs its required options {missing}")
    data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": CHAT_INPUT}
    if top:
        data["options"] = top
    if "guild_id" in command:
        data["guild_id"] = str(member.guild.id)
    if resolved:
        data["resolved"] = resolved
    return data


def _definition(definitions: list[dict[str, Any]], name: str, command: str) -> dict[str, Any]:
    for definition in definitions:
        if definition["name"] == name:
            return definition
    known = [d["name"] for d in definitions]
    raise LookupError(f"/{command} has no option or subcommand {name!r} (it has {known})")


def _option_value(
    world: World,
    member: Member,
    definition: dict[str, Any],
    value: Any,
    resolved: dict[str, dict[str, Any]],
) -> Any:
    """The wire value of one option, adding users, members, roles... to `resolved`."""
    kind = definition["type"]
    if kind == STRING and isinstance(value, str):
        return value
    if kind == INTEGER and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == NUMBER and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if kind == BOOLEAN and isinstance(value, bool):
        return value
    if kind in (USER, MENTIONABLE) and isinstance(value, Member | User):
        user = value.user if isinstance(value, Member) else value
        resolved.setdefault("users", {})[str(user.id)] = user.to_json()
        if isinstance(value, Member):
            member = value.to_json(with_user=False)
            member["permissions"] = str(value.permissions)
            resolved.setdefault("members", {})[str(user.id)] = member
        return str(user.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, Role):
        resolved.setdefault("roles", {})[str(value.id)] = value.to_json()
        return str(value.id)
    if kind == CHANNEL and isinstance(value, Channel):
        channel = value.to_json()
        channel["permissions"] = str(member.permissions)  # the invoker's, in that channel
        resolved.setdefault("channels", {})[str(value.id)] = channel
        return str(value.id)
    if kind == ATTACHMENT and isinstance(value, tuple):
        filename, data = value
        attachment = world.add_attachment(filename, data)
        resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_json()
        return str(attachment.id)
    raise TypeError(f"option {definition['name']!r} (type {kind}) cannot be {value!r}")
