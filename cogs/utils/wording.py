"""Everything the bot says to members and moderators, in one place.

The domain answers with codes and data (a job's failure, a refusal and its numbers, a
moderator's change, a share refused); each sentence is written here once.
"""

from __future__ import annotations

from typing import assert_never

from jobs.admission import (
    AllotmentShort,
    BudgetShort,
    GenerationPaused,
    MemberBanned,
    PromptBlocked,
    QueueFull,
    Refusal,
)
from jobs.failures import Failure, FailureKind
from jobs.requests import InvalidOption
from quota.allotments import Allotment, AllotmentUse
from quota.changes import (
    AllotmentSet,
    Banned,
    Change,
    ChannelSet,
    CreditSet,
    Granted,
    LimitSet,
    LimitsReset,
    Unbanned,
    WordBlocked,
    WordUnblocked,
)
from quota.limits import LimitField, LimitReached, OutOfRange, Quantity, Rule, ScopeKind
from quota.moderation import BlocklistFull, CreditStatus, Quota
from sharing.gallery import ShareRefusal, VoteOutcome, VoteRefusal

FAILURE_TITLES: dict[FailureKind, str] = {
    FailureKind.INVALID_OPTION: "The image server refused an option",
    FailureKind.BAD_KEY: "The bot's API key was refused",
    FailureKind.OUT_OF_CREDIT: "The bot's image-generation account is out of credit",
    FailureKind.TASK_FAILED: "The generation failed",
    FailureKind.TIMED_OUT: "The generation timed out",
    FailureKind.STOPPED_WAITING: "The image server is taking too long",
    FailureKind.UNAVAILABLE: "The image server is not answering right now",
    FailureKind.UNCERTAIN: "The image server did not confirm the job",
    FailureKind.TASK_LOST: "The image server lost track of the job",
    FailureKind.DOWNLOAD_FAILED: "The images could not be fetched",
    FailureKind.DELIVERY_FAILED: "The images could not be posted",
    FailureKind.SOURCE_MISSING: "The image to upscale is no longer in Discord",
    FailureKind.EXPIRED: "The job waited too long to start",
    FailureKind.SHUTDOWN: "The bot restarted before the job could start",
    FailureKind.INTERNAL: "Something went wrong in the bot",
}

_ADVICE: dict[FailureKind, str] = {
    FailureKind.INVALID_OPTION: "Change the option it names and try again.",
    FailureKind.BAD_KEY: "The bot's admin needs to check its API key (OMNI_API_KEY) or image "
    "servers' password (A1111_AUTH). Nothing was charged.",
    FailureKind.OUT_OF_CREDIT: "Generation is paused for everyone until the bot's operator tops "
    "up the account. Nothing was charged.",
    FailureKind.TASK_FAILED: "Nothing was charged. Try again, perhaps with other options.",
    FailureKind.TIMED_OUT: "Nothing was charged. Try again in a moment.",
    FailureKind.STOPPED_WAITING: "The bot stopped waiting, but the server may still make the "
    "images, so it counts against your allowance; if they arrive, they are posted here.",
    FailureKind.UNAVAILABLE: "Nothing was charged. Try again in a few minutes.",
    FailureKind.UNCERTAIN: "It may have started anyway, so it counts against your allowance "
    "just in case; it is never sent twice. Try again.",
    FailureKind.TASK_LOST: "Nothing was charged. Try again.",
    FailureKind.DOWNLOAD_FAILED: "They were made, but did not pass the bot's checks or could "
    "not be fetched. Try again.",
    FailureKind.DELIVERY_FAILED: "Discord refused the upload. Try again.",
    FailureKind.SOURCE_MISSING: "The bot could not find it (was its message deleted?). "
    "Nothing was charged.",
    FailureKind.EXPIRED: "The bot restarted while it was queued. Nothing was charged; try again.",
    FailureKind.SHUTDOWN: "Nothing was charged; try again in a minute.",
    FailureKind.INTERNAL: "Nothing was charged. The error was logged for the admins.",
}

# Details worth showing (already shortened and cleaned of secrets by the backend): the image
# server's own words about the member's request.
_SHOW_DETAIL = frozenset({FailureKind.INVALID_OPTION, FailureKind.TASK_FAILED})


def failure_text(failure: Failure) -> tuple[str, str]:
    """(title, body) for an embed telling the member how their job ended."""
    body = _ADVICE[failure.kind]
    if failure.kind in _SHOW_DETAIL and failure.detail:
        body = f"The image server said: {failure.detail[:300]}\n{body}"
    if failure.spent and failure.kind is not FailureKind.UNCERTAIN:
        body = body.replace("Nothing was charged. ", "")
    return FAILURE_TITLES[failure.kind], body


PAUSED_NOTICE = (
    "⚠️ The image service says the bot's account is out of credit, so image generation is "
    "paused for everyone. The bot's operator needs to top up the account, then run "
    "`/credit set` with the new balance to resume."
)
SANDBOX_NOTE = "sandbox: images come from the local emulator; no credit is spent"
LOST_TITLE = "The bot restarted before it could take your request"
LOST_BODY = "Nothing was saved or charged. Please run the command again."
RESTARTING_NOTE = "The bot is restarting. Your job is saved and starts when it is back."


# -- /imagine and the job buttons (the Imagine cog) -----------------------------------------

UNEXPECTED = "❌ Something went wrong on the bot's side. Nothing was charged; please try again."
SERVERS_ONLY = "This works only in a server the bot is in."
RESTARTING_REFUSAL = "🔁 The bot is restarting; try again in a minute."
STORAGE_UNAVAILABLE = (
    "❌ The bot's storage is unavailable right now, so nothing was started or charged. "
    "Please try again in a few minutes."
)
JOB_UNKNOWN = "This image's job is no longer known to the bot."
IMAGE_UNAVAILABLE = "That image is not available any more."
DELETE_NOT_YOURS = "Only the member who asked for these images, or a moderator, can delete them."
DELETED = "🗑️ Deleted."
ALREADY_DELETED = "These images were already deleted."

_OPTION_PROBLEMS = {
    "missing": "is missing or not text",
    "empty": "must contain something visible",
    "too_long": "must be at most {allowed} characters",
    "out_of_range": "must be from {allowed}",
    "not_offered": "must be one of: {allowed}",
    "not_supported": "is not supported by the bot's image server",
}


def option_error(error: InvalidOption) -> str:
    """`❌ **steps**: must be from 1–50 (got 80).` — the value is echoed only when short."""
    text = f"❌ **{error.option}**: " + _OPTION_PROBLEMS[error.problem.value].format(
        allowed=error.allowed
    )
    if error.got is not None:
        text += f" (got {error.got})"
    return text + "."


_ATTACHMENT_PROBLEMS = {
    "not_an_image": "is not a PNG, JPEG or WebP picture",
    "too_large": "is too large (at most {limit})",
    "too_many_pixels": "has too many pixels (at most 16 megapixels)",
    "unreadable": "could not be read; try uploading it again",
}


def attachment_error(reason: str, limit: str = "") -> str:
    return "❌ **image**: the attachment " + _ATTACHMENT_PROBLEMS[reason].format(limit=limit) + "."


SAFETY_APPLIED = (
    "This server's safety terms were added to the negative prompt (this channel is not "
    "age-restricted)."
)


# -- a job refused before it started (admission) --------------------------------------------

BANNED = "a moderator has turned off image generation for you"


def _per(field: LimitField) -> str:
    return "hour" if field is LimitField.IMAGES_PER_HOUR else "day"


def _limit_reason(refusal: LimitReached) -> str:
    match refusal.field:
        case LimitField.MAX_IMAGES_PER_JOB:
            return f"you can ask for at most {refusal.limit} images per job"
        case LimitField.CONCURRENT_JOBS:
            return (
                f"you already have {refusal.running} job(s) running "
                f"(limit {refusal.limit}); wait for one to finish"
            )
        case LimitField.COOLDOWN_SECONDS:
            return f"please wait {refusal.limit}s between jobs"
        case LimitField.IMAGES_PER_HOUR | LimitField.IMAGES_PER_DAY:
            return f"that would take you past {refusal.limit} images per {_per(refusal.field)}"
    assert_never(refusal.field)


def _allotment_reason(refusal: AllotmentShort) -> str:
    use, period = refusal.use, refusal.use.allotment.period.value
    if use.left == 0:
        return f"this server's allotment of {use.allotment.images} images per {period} is used up"
    return (
        f"this server's allotment has {use.left} image(s) left this {period} and this job "
        f"needs {refusal.needed}"
    )


def refusal_reason(refusal: Refusal) -> str:
    """Why a job was not started, as the end of "Not started: …"."""
    match refusal:
        case GenerationPaused():
            return (
                "image generation is paused: the bot's image-generation account is out of "
                "credit. The moderators have been told"
            )
        case MemberBanned():
            return BANNED
        case PromptBlocked(word=word):
            return f"this server does not allow “{word}” in prompts"
        case QueueFull():
            return "the bot is busy right now, try again"
        case LimitReached():
            return _limit_reason(refusal)
        case AllotmentShort():
            return _allotment_reason(refusal)
        case BudgetShort(available=available, needed=needed):
            return (
                f"the bot's image budget, shared by every server, has {available} image(s) "
                f"left and this job needs {needed}; ask a moderator"
            )
    assert_never(refusal)


def _retry_at(refusal: Refusal) -> float | None:
    match refusal:
        case QueueFull(retry_at=at):
            return at
        case LimitReached(resets_at=at):
            return at
        case AllotmentShort(use=use):
            return use.resets_at
    return None


def refusal_text(refusal: Refusal) -> str:
    """The ephemeral answer to a refused `/imagine`, Reroll, Variations or Upscale."""
    text = f"⛔ Not started: {refusal_reason(refusal)}."
    at = _retry_at(refusal)
    if at is not None:
        text += f" You can try again {when(at)}."
    return text + " Nothing was charged."


def when(timestamp: float) -> str:
    """A moment as Discord shows it to each reader: "in 5 minutes" (rounded up)."""
    return f"<t:{int(timestamp) + 1}:R>"


def sentence(fragment: str) -> str:
    """Capitalised, with a full stop: `a fragment` → `A fragment.`"""
    return fragment[:1].upper() + fragment[1:] + "."


# -- sharing to the gallery ------------------------------------------------------------------

_SHARE_REFUSALS: dict[ShareRefusal, str] = {
    ShareRefusal.NO_GALLERY: "This server has no gallery channel yet; a moderator can set one "
    "with `/gallery channel`.",
    ShareRefusal.GALLERY_GONE: "This server's gallery channel no longer exists; a moderator "
    "can set a new one with `/gallery channel`.",
    ShareRefusal.NOT_FINISHED: "Only finished images can be shared.",
    ShareRefusal.DELETED: "These images were deleted.",
    ShareRefusal.ALREADY_SHARED: "These images are already in the gallery.",
    ShareRefusal.NOT_YOURS: "Only the member who made these images can share them.",
    ShareRefusal.AGE_RESTRICTED: "These images were made in an age-restricted channel and the "
    "gallery is not age-restricted, so they can't be shared there.",
    ShareRefusal.IMAGES_GONE: "These images are no longer in Discord, so there is nothing to "
    "share.",
}


def share_refusal_text(refusal: ShareRefusal) -> str:
    return f"⛔ {_SHARE_REFUSALS[refusal]}"


SHARE_POST_FAILED = "❌ Discord refused the gallery post; try again."


def shared_to(channel_mention: str) -> str:
    return f"📣 Shared to {channel_mention}!"


GALLERY_BY = "By"
GALLERY_ORIGINAL = "Original"
GALLERY_JUMP = "jump to it"

_VOTE_REFUSALS: dict[VoteRefusal, str] = {
    VoteRefusal.NOT_SHARED: "These images are not in the gallery (any more), so they can't be "
    "voted for.",
    VoteRefusal.OWN_IMAGES: "You can't vote for your own images.",
    VoteRefusal.ALREADY_VOTED: "You've already voted for this one (⭐ {total}).",
}


def vote_refusal_text(outcome: VoteOutcome) -> str:
    assert outcome.refusal is not None
    return _VOTE_REFUSALS[outcome.refusal].format(total=outcome.total)


GALLERY_TOP_EMPTY = "No images were shared to the gallery in that period yet."
GALLERY_PROMPT_ERASED = "*(prompt erased)*"


def gallery_top_heading(period: str, page: int, pages: int, total: int) -> str:
    over = {"day": "today", "week": "this week", "all": "of all time"}.get(period, period)
    return (
        f"🏆 **Top images {over}** · page {page} of {pages} · {total} shared · use `page:` to turn"
    )


def gallery_top_entry(rank: int, votes: int, prompt: str, author_id: int, jump_url: str) -> str:
    return f"**{rank}.** ⭐ {votes} · {prompt}\nby <@{author_id}> · [jump to it]({jump_url})"


# -- moderators' and the operator's changes --------------------------------------------------

OPERATOR_ONLY = "Only the bot's operator can use this command: it changes what every server gets."

_QUANTITIES: dict[Quantity, str] = {
    Quantity.GRANT: "a grant must be from {low} to {high} images (got {got})",
    Quantity.CREDIT: "credit must be from {low} to {high} images (got {got})",
    Quantity.ALLOTMENT: "an allotment must be from {low} to {high} images (got {got})",
    Quantity.WORD_LENGTH: "a blocked word must be {low} to {high} characters",
}


def moderation_problem(problem: OutOfRange | BlocklistFull) -> str:
    """Why a moderator's change was refused, as "❌ …"."""
    match problem:
        case OutOfRange(what=LimitField() as field, low=low, high=high, got=got):
            return f"❌ `{field.value}` must be from {low} to {high} (got {got})"
        case OutOfRange(what=Quantity() as quantity, low=low, high=high, got=got):
            return "❌ " + _QUANTITIES[quantity].format(low=low, high=high, got=got)
        case BlocklistFull(capacity=capacity):
            return f"❌ the blocklist is full ({capacity} words)"
    raise TypeError(f"no wording for {problem!r}")


def _scope_label(scope: ScopeKind, scope_id: int) -> str:
    if scope is ScopeKind.ROLE:
        return f"<@&{scope_id}>"
    if scope is ScopeKind.USER:
        return f"<@{scope_id}>"
    return "server default"


def _allotment(allotment: Allotment | None) -> str | None:
    if allotment is None:
        return None
    return f"{allotment.images} images per {allotment.period.value}"


def _line(action: str, target: str, before: object, after: object) -> str:
    def shown(value: object) -> str:
        return "—" if value is None else str(value)

    return f"{action} {target}: {shown(before)} → {shown(after)}"


def describe(change: Change) -> str:
    """One line for the moderator and the mod-log: what, to whom, before → after."""
    match change:
        case LimitSet():
            target = f"{_scope_label(change.scope, change.scope_id)} {change.field.value}"
            return _line("limit set", target, change.before, change.after)
        case LimitsReset():
            removed = ", ".join(f"{r.field.value}={r.value}" for r in change.removed) or None
            target = _scope_label(change.scope, change.scope_id)
            return _line("limits reset", target, removed, "defaults")
        case Granted():
            return _line("grant", f"<@{change.user_id}>", change.before, change.after)
        case Banned():
            before = "banned" if change.already else None
            return _line("ban", f"<@{change.user_id}>", before, "banned")
        case Unbanned():
            before = "banned" if change.was_banned else None
            return _line("unban", f"<@{change.user_id}>", before, None)
        case CreditSet():
            text = _line(
                "credit set", "account", f"{change.available_before} available", change.credit
            )
            return text + (" (generation resumes)" if change.was_paused else "")
        case AllotmentSet():
            before, after = _allotment(change.before), _allotment(change.after)
            return _line("allotment set", "server", before, after)
        case WordBlocked():
            before = "blocked" if change.already else None
            return _line("blocklist add", change.word, before, "blocked")
        case WordUnblocked():
            before = "blocked" if change.was_blocked else None
            return _line("blocklist remove", change.word, before, None)
        case ChannelSet():
            before = f"<#{change.before}>" if change.before else None
            return _line(f"{change.channel.value} channel", "server", before, f"<#{change.after}>")
    assert_never(change)


def _allotment_line(use: AllotmentUse | None) -> str:
    if use is None:
        return (
            "**This server's allotment:** none: its members draw on the account's credit "
            "with no cap of their own"
        )
    allotment = use.allotment
    return (
        f"**This server's allotment:** {allotment.images} images per {allotment.period.value}"
        f" · **used:** {use.used} · **left:** {use.left} · resets {when(use.resets_at)}"
    )


def credit_status_text(status: CreditStatus) -> str:
    """`/credit show`: the account every server shares, then this server's allotment."""
    balance = status.balance
    if balance.unlimited:
        text = (
            f"**Credit:** unlimited · **spent:** {balance.spent} · "
            f"**reserved:** {balance.reserved} (shared by every server)"
        )
    else:
        text = (
            f"**Credit:** {balance.credit} images · **spent:** {balance.spent} · "
            f"**reserved:** {balance.reserved} · **available:** {balance.available} "
            "(shared by every server)"
        )
    if balance.paused_reason:
        text += "\n⚠️ Generation is paused: the image service reported the account out of credit."
    return text + "\n" + _allotment_line(status.allotment)


MODERATORS_ONLY = "⛔ Only moderators (Manage Server) can use this command."
NOT_HERE = "⛔ You can't use this command here."


def option_not_valid(kind: str) -> str:
    """An option Discord's client should have refused (a forged or outdated payload)."""
    return f"❌ A **{kind}** option was not valid; please check the command's options."


# -- Privacy (/privacy forget) -------------------------------------------------------------

FORGET_CONFIRM = (
    "⚠️ This erases the prompts and negative prompts of all your finished jobs in this "
    "server (your images and counts stay). It cannot be undone. Continue?"
)
FORGET_CANCELLED = "Nothing was erased."
FORGET_EXPIRED = "This question has expired; nothing was erased. Run `/privacy forget` again."
FORGET_NOT_YOURS = "⛔ Only the member who asked can answer this."


def forgot(erased: int, running: int) -> str:
    """`/privacy forget` confirmed: how many jobs were erased, and any left running."""
    text = f"🧹 Erased the texts of {erased} job(s)."
    if running:
        text += f" {running} job(s) still running were left alone: run it again once they end."
    return text


# -- Per-member defaults (/settings) -------------------------------------------------------

DEFAULTS_NOTHING_GIVEN = "Give at least one option to set, e.g. `/settings set steps: 30`."


def member_defaults_text(defaults: dict[str, object]) -> str:
    """`/settings`: the member's defaults here, or that `/imagine`'s own apply."""
    if not defaults:
        return "You have no defaults here: `/imagine` uses its own. Set some with `/settings set`."
    lines = [f"**{name}:** {value}" for name, value in defaults.items()]
    return "Your defaults here (an option you give `/imagine` always wins):\n" + "\n".join(lines)


# -- /limits, /blocklist and /history ---------------------------------------------------------

HISTORY_OTHERS_MODERATORS_ONLY = "⛔ Only moderators can see another member's history."
HISTORY_EMPTY = "No images yet. Try `/imagine`!"


def history_footer(page: int, pages: int, total: int) -> str:
    return f"Page {page} of {pages} · {total} job(s) · use page: to turn"


def limit_target_missing(scope: str) -> str:
    return f"❌ **target**: give the {scope} this limit is for."


def blocklist_text(words: list[str]) -> str:
    text = ", ".join(f"`{w}`" for w in words) if words else "The blocklist is empty."
    return text[:2000]


def limits_text(title: str | None, rules: list[Rule], quota: Quota | None) -> str:
    """`/limits show`: the rules set for a scope, and a member's effective limits and use."""
    lines = [f"`{r.field.value}` = {r.value}" for r in rules] or ["(no rules set here)"]
    if quota is not None:
        effective = ", ".join(f"{f.value}={quota.limits.value(f)}" for f in LimitField)
        lines.append(f"Effective: {effective}")
        lines.append(f"Used today: {quota.usage.images_last_day}; granted: {quota.usage.grant}")
    return f"**{title or 'Server defaults'}**\n" + "\n".join(lines)
