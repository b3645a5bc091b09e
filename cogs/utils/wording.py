"""Everything the bot says to members about jobs, in one place."""

from __future__ import annotations

from jobs.failures import Failure, FailureKind

FAILURE_TITLES: dict[FailureKind, str] = {
    FailureKind.INVALID_OPTION: "Omniinfer refused an option",
    FailureKind.BAD_KEY: "The bot's Omniinfer key was refused",
    FailureKind.OUT_OF_CREDIT: "The bot's Omniinfer account is out of credit",
    FailureKind.TASK_FAILED: "The generation failed",
    FailureKind.TIMED_OUT: "The generation timed out",
    FailureKind.UNAVAILABLE: "Omniinfer is not answering right now",
    FailureKind.UNCERTAIN: "Omniinfer did not confirm the job",
    FailureKind.TASK_LOST: "Omniinfer lost track of the job",
    FailureKind.DOWNLOAD_FAILED: "The images could not be fetched",
    FailureKind.DELIVERY_FAILED: "The images could not be posted",
    FailureKind.SOURCE_MISSING: "The image to upscale is no longer in Discord",
    FailureKind.EXPIRED: "The job waited too long to start",
    FailureKind.SHUTDOWN: "The bot restarted before the job could start",
    FailureKind.INTERNAL: "Something went wrong in the bot",
}

_ADVICE: dict[FailureKind, str] = {
    FailureKind.INVALID_OPTION: "Change the option it names and try again.",
    FailureKind.BAD_KEY: "A server admin needs to check OMNI_API_KEY. Nothing was charged.",
    FailureKind.OUT_OF_CREDIT: "Generation is paused for everyone until a moderator tops up "
    "the account. Nothing was charged.",
    FailureKind.TASK_FAILED: "Nothing was charged. Try again, perhaps with other options.",
    FailureKind.TIMED_OUT: "Nothing was charged. Try again in a moment.",
    FailureKind.UNAVAILABLE: "Nothing was charged. Try again in a few minutes.",
    FailureKind.UNCERTAIN: "It may have started anyway, so it counts against your allowance "
    "just in case; it is never sent twice. Try again.",
    FailureKind.TASK_LOST: "Nothing was charged. Try again.",
    FailureKind.DOWNLOAD_FAILED: "Omniinfer made them, but the links failed. Try again.",
    FailureKind.DELIVERY_FAILED: "Discord refused the upload. Try again.",
    FailureKind.SOURCE_MISSING: "The bot could not find it (was its message deleted?). "
    "Nothing was charged.",
    FailureKind.EXPIRED: "The bot restarted while it was queued. Nothing was charged; try again.",
    FailureKind.SHUTDOWN: "Nothing was charged; try again in a minute.",
    FailureKind.INTERNAL: "Nothing was charged. The error was logged for the admins.",
}

# Details worth showing verbatim: Omniinfer's own words about the user's request.
_SHOW_DETAIL = frozenset({FailureKind.INVALID_OPTION, FailureKind.TASK_FAILED})


def failure_text(failure: Failure) -> tuple[str, str]:
    """(title, body) for an embed telling the member how their job ended."""
    body = _ADVICE[failure.kind]
    if failure.kind in _SHOW_DETAIL and failure.detail:
        body = f"Omniinfer said: {failure.detail[:300]}\n{body}"
    if failure.spent and failure.kind is not FailureKind.UNCERTAIN:
        body = body.replace("Nothing was charged. ", "")
    return FAILURE_TITLES[failure.kind], body


PAUSED_NOTICE = (
    "⚠️ Omniinfer says the bot's account is out of credit, so image generation is paused for "
    "everyone. Top up the account, then run `/credit set` with the new balance to resume."
)
SANDBOX_NOTE = "sandbox: images come from the local emulator; no credit is spent"
LOST_TITLE = "The bot restarted before it could take your request"
LOST_BODY = "Nothing was saved or charged. Please run the command again."
RESTARTING_NOTE = "The bot is restarting. Your job is saved and starts when it is back."
