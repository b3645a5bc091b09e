"""`python -m omni`: check a key and an API from a shell before inviting the bot anywhere.

    python -m omni txt2img "a red fox" [--backend omniinfer|novita|a1111] [--out DIR] ...
    python -m omni models [--backend ...] [--type checkpoint|vae|...|sampler]

`txt2img` goes through the same backend adapter the bot uses (`backends.*`), so it checks
exactly what the bot would do. Connection: `--key` or $OMNI_API_KEY (omniinfer, novita);
`--base-url` or $OMNI_BASE_URL; for a1111 `--base-url` or the first of $A1111_URLS, with
$A1111_AUTH (user:password) when the server wants it.

Exit codes: 0 success, 1 the API said no (bad key, out of credit, task failed...), 2 invalid
input (the message names the field; nothing was submitted), 130 interrupted (the message
names the task that may still run and be billed).

This is the one module of `omni` that imports the bot's `backends` (for `--backend`), and
only inside the commands: the rest of the package stands alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from tqdm import tqdm

from omni import rules
from omni.client import DEFAULT_BASE_URL, OmniClient
from omni.errors import AuthenticationError, InsufficientCredit, InvalidRequest, OmniError
from omni.models import Txt2ImgRequest

if TYPE_CHECKING:
    from jobs.backend import Backend, BackendError, Capabilities, Generation

EXIT_OK, EXIT_API_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
# After Ctrl-C, the run is cancelled and closes its connections; if that has not ended it
# within this many seconds (a cancel lost inside a library, a close that hangs), the
# process says what it would have said and exits anyway.
INTERRUPT_GRACE = 5.0
BACKEND_NAMES = ("omniinfer", "novita", "a1111")
MODEL_TYPES = ("checkpoint", "lora", "vae", "controlnet", "upscaler", "textualinversion")
API_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
DEFAULT_MAX_WAIT = 600.0
STATE_WORDS = {"queued": "queued", "running": "running", "succeeded": "done"}


class UsageError(Exception):
    """Invalid input, found before anything was submitted (exit 2)."""


@dataclass
class Run:
    """How far the command got, read when Ctrl-C interrupts it."""

    submitting: bool = False
    handle: str | None = None
    backend: str = ""


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="omniinfer",
        help="which API: Omniinfer v2 (default), Novita v3, or AUTOMATIC1111/Forge servers",
    )
    connection.add_argument("--key", help="API key (default: $OMNI_API_KEY; not for a1111)")
    connection.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $OMNI_BASE_URL or the API's own; a1111: $A1111_URLS)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m omni",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "txt2img", parents=[connection], help="generate SDXL 1.0 images and save them"
    )
    gen.add_argument("prompt")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--sampler", default=None, help="a sampler name (default: the backend's)")
    gen.add_argument("--steps", type=int, default=rules.DEFAULT_STEPS)
    gen.add_argument("--cfg-scale", type=float, default=rules.DEFAULT_CFG_SCALE)
    gen.add_argument("--seed", type=int, default=rules.RANDOM_SEED, help="-1 for random")
    gen.add_argument("--batch-size", type=int, default=1, help="how many images")
    gen.add_argument(
        "--size",
        default=rules.size_label(*rules.DEFAULT_SIZE),
        help="WIDTHxHEIGHT, one of: "
        + ", ".join(rules.size_label(w, h) for w, h in rules.SDXL_SIZES),
    )
    gen.add_argument("--model", default=None, help=f"checkpoint name (default: {rules.SDXL_MODEL})")
    gen.add_argument("--out", type=Path, default=Path("."), help="directory for the images")
    gen.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT,
        help="seconds to wait for the task (%(default)s)",
    )

    listing = commands.add_parser(
        "models", parents=[connection], help="list the models and samplers the API offers"
    )
    listing.add_argument("--type", choices=[*MODEL_TYPES, "sampler"])
    return parser


# -- connection ------------------------------------------------------------------------------


def _api_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("OMNI_API_KEY", "")
    if not key:
        raise UsageError("OMNI_API_KEY is not set: export it or pass --key")
    return key


def _base_url(args: argparse.Namespace) -> str:
    if args.base_url:
        return args.base_url
    if args.backend == "a1111":
        urls = [u.strip() for u in os.environ.get("A1111_URLS", "").split(",") if u.strip()]
        if not urls:
            raise UsageError("A1111_URLS is not set: pass --base-url http://127.0.0.1:7860")
        return urls[0]
    if os.environ.get("OMNI_BASE_URL"):
        return os.environ["OMNI_BASE_URL"]
    if args.backend == "novita":
        from omni.v3.client import DEFAULT_BASE_URL as NOVITA_BASE_URL

        return NOVITA_BASE_URL
    return DEFAULT_BASE_URL


def _backend(args: argparse.Namespace, session: aiohttp.ClientSession) -> Backend:
    """The adapter the bot would use for `--backend`, on the CLI's session."""
    base_url = _base_url(args)
    model = getattr(args, "model", None)
    if args.backend == "a1111":
        if model:
            raise UsageError("--model: an AUTOMATIC1111 server uses the checkpoint it has loaded")
        try:
            from backends.a1111 import A1111Backend
        except ImportError:
            raise UsageError("--backend a1111: backends.a1111 is not installed") from None

        return A1111Backend([base_url], auth=os.environ.get("A1111_AUTH") or None, session=session)
    if args.backend == "novita":
        from backends.novita import NovitaBackend

        return NovitaBackend(
            _api_key(args),
            base_url=base_url,
            session=session,
            timeout=API_TIMEOUT,
            model_name=model or rules.SDXL_MODEL,
        )
    from backends.omniinfer import OmniinferBackend

    return OmniinferBackend(
        _api_key(args),
        base_url=base_url,
        session=session,
        timeout=API_TIMEOUT,
        model_name=model or rules.SDXL_MODEL,
    )


# -- txt2img ---------------------------------------------------------------------------------


def _generation(args: argparse.Namespace, caps: Capabilities) -> Generation:
    """The request, checked against what the backend accepts; UsageError names the field."""
    from jobs.backend import MAX_SEED, RANDOM_SEED, Generation

    def refuse(field: str, problem: str) -> UsageError:
        return UsageError(f"{field}: {problem}")

    if not args.prompt.strip():
        raise refuse("prompt", "must not be empty")
    sampler = args.sampler or caps.default_sampler
    if sampler not in caps.samplers:
        raise refuse(
            "sampler", f"{sampler!r} is not offered by {caps.name}: {', '.join(caps.samplers)}"
        )
    if args.steps not in caps.steps:
        raise refuse("steps", f"must be from {caps.steps.describe()} (got {args.steps})")
    if args.cfg_scale not in caps.cfg_scale:
        raise refuse(
            "cfg_scale", f"must be from {caps.cfg_scale.describe()} (got {args.cfg_scale})"
        )
    if args.seed != RANDOM_SEED and not 0 <= args.seed <= MAX_SEED:
        raise refuse("seed", f"must be -1 (random) or 0–{MAX_SEED} (got {args.seed})")
    sizes = ", ".join(rules.size_label(w, h) for w, h in caps.sizes)
    try:
        width, height = (int(part) for part in args.size.lower().split("x"))
    except ValueError:
        raise refuse("size", f"{args.size!r} is not WIDTHxHEIGHT; use one of: {sizes}") from None
    if (width, height) not in caps.sizes:
        raise refuse("size", f"{args.size!r} is not offered by {caps.name}; use one of: {sizes}")
    if not 1 <= args.batch_size <= caps.max_images:
        raise refuse("batch_size", f"must be from 1–{caps.max_images} (got {args.batch_size})")
    if args.backend == "omniinfer":  # the client's own SDXL checks, e.g. prompt length
        try:
            Txt2ImgRequest(
                prompt=args.prompt,
                negative_prompt=args.negative_prompt,
                sampler_name=sampler,
                steps=args.steps,
                cfg_scale=args.cfg_scale,
                seed=args.seed,
                width=width,
                height=height,
                batch_size=args.batch_size,
                model_name=args.model or rules.SDXL_MODEL,
            ).validate()
        except InvalidRequest as exc:
            raise UsageError(str(exc)) from None
    return Generation(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        sampler=sampler,
        steps=args.steps,
        cfg_scale=args.cfg_scale,
        seed=args.seed,
        width=width,
        height=height,
        images=args.batch_size,
    )


def _check_writable(out: Path) -> None:
    """Find an `--out` that cannot take the images before anything is paid for.

    Writes and removes a probe file, since permission bits alone lie (root, ACLs, read-only
    mounts)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".omni-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None


async def _txt2img(backend: Backend, args: argparse.Namespace, run: Run) -> int:
    await backend.start()
    caps = backend.capabilities
    generation = _generation(args, caps)
    _check_writable(args.out)

    run.submitting = True
    handle = await backend.submit(generation)
    run.handle, run.submitting = handle, False
    print(f"task {handle} submitted to {caps.name}", file=sys.stderr, flush=True)

    with _Bar(total=100, desc="submitted", file=sys.stderr, bar_format=_Bar.FORMAT) as bar:
        async for reading in backend.follow(handle, max_wait=args.max_wait):
            word = STATE_WORDS.get(str(reading.state), str(reading.state))
            bar.set_description_str(word, refresh=False)
            bar.n = 100 if word == "done" else round(max(0.0, min(1.0, reading.progress)) * 100)
            bar.api_eta = "?" if reading.eta is None else f"{reading.eta:.0f}s"
            bar.refresh()
    output = await backend.result(handle, expected=generation.images)

    stem = re.sub(r"[^A-Za-z0-9_-]", "_", handle)[:8] or "image"
    for index, data in enumerate(output.images):
        seed = output.seeds[index] if index < len(output.seeds) else None
        name = f"{stem}-{index}" + (f"-seed{seed}" if seed is not None else "")
        path = args.out / f"{name}.{_extension(data)}"
        path.write_bytes(data)
        print(path)
    return EXIT_OK


class _Bar(tqdm):
    """tqdm showing the API's ETA as the only one: tqdm's own rate-based guess is wrong for
    a task that sits queued and then jumps."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| eta {api_eta}"
    api_eta = "?"

    @property
    def format_dict(self) -> dict[str, object]:
        return {**super().format_dict, "api_eta": self.api_eta}


def _extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


# -- models ----------------------------------------------------------------------------------


async def _models(
    backend: Backend, args: argparse.Namespace, session: aiohttp.ClientSession
) -> int:
    """`type<TAB>name` lines: the API's model list where it has one, then the samplers."""
    wanted = args.type
    if wanted != "sampler":
        if args.backend == "omniinfer":
            client = OmniClient(
                _api_key(args), base_url=_base_url(args), session=session, timeout=API_TIMEOUT
            )
            for model in await client.models(wanted):
                print(f"{model.type}\t{model.name}")
        elif args.backend == "a1111" and wanted in (None, "checkpoint"):
            from a1111.client import A1111Client

            server = A1111Client(
                _base_url(args), session=session, auth=os.environ.get("A1111_AUTH") or None
            )
            for checkpoint in await server.sd_models():
                print(f"checkpoint\t{checkpoint.title}")
        else:
            print(f"note: {args.backend} does not list {wanted or 'models'}", file=sys.stderr)
    if wanted in (None, "sampler"):
        await backend.start()
        for sampler in backend.capabilities.samplers:
            print(f"sampler\t{sampler}")
    return EXIT_OK


# -- running ---------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, run: Run) -> int:
    _on_ctrl_c(run)
    async with aiohttp.ClientSession() as session:
        backend = _backend(args, session)
        try:
            if args.command == "txt2img":
                return await _txt2img(backend, args, run)
            return await _models(backend, args, session)
        finally:
            await backend.close()


def _on_ctrl_c(run: Run) -> None:
    """Ctrl-C cancels the run (`main` then names what may be billed), and a run that does
    not end within INTERRUPT_GRACE is ended anyway."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def interrupted() -> None:
        task.cancel()
        loop.call_later(INTERRUPT_GRACE, _exit_interrupted, run)

    loop.add_signal_handler(signal.SIGINT, interrupted)


def _exit_interrupted(run: Run) -> None:
    print(f"\n{_interrupted(run)}", file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)


def _describe(error: BackendError, run: Run) -> str:
    from jobs.backend import (
        BadOutput,
        CredentialsRefused,
        NotAccepted,
        OptionRefused,
        OutOfCredit,
        SubmitUncertain,
        TaskFailed,
        TaskLost,
        TaskTimedOut,
        Unavailable,
    )

    message = error.message
    if isinstance(error, CredentialsRefused):
        return f"bad API key: {message}" if run.backend != "a1111" else f"refused: {message}"
    if isinstance(error, OutOfCredit):
        return f"out of credit: {message}"
    if isinstance(error, OptionRefused):
        option = f" ({error.option})" if error.option else ""
        return f"the API refused the request{option}: {message}"
    if isinstance(error, TaskFailed):
        return f"generation failed: {error.reason or 'no reason given'}"
    if isinstance(error, TaskTimedOut):
        if error.by_server:
            return f"timed out by the API: {message}"
        return f"gave up waiting: task {run.handle} may still finish, and be billed"
    if isinstance(error, SubmitUncertain):
        return f"the API may have taken the request (and billed it); not retried: {message}"
    if isinstance(error, NotAccepted):
        return f"the API did not take the request (nothing billed): {message}"
    if isinstance(error, TaskLost):
        return f"the API no longer knows task {run.handle}: {message}"
    if isinstance(error, BadOutput):
        return f"the result cannot be used: {message}"
    if isinstance(error, Unavailable):
        return f"the API is not answering: {message}"
    return f"API error: {message}"


def _describe_omni(error: OmniError) -> str:
    if isinstance(error, AuthenticationError):
        return f"bad API key: {error}"
    if isinstance(error, InsufficientCredit):
        return f"out of credit: {error}"
    return f"API error: {error}"


def _interrupted(run: Run) -> str:
    if run.handle:
        return (
            f"interrupted: task {run.handle} was submitted to {run.backend} and may still run "
            "and be billed"
        )
    if run.submitting:
        return f"interrupted while submitting: {run.backend} may have created (and billed) a task"
    return "interrupted: nothing was submitted"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = Run(backend=args.backend)
    from jobs.backend import BackendError

    try:
        return asyncio.run(_run(args, run))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BackendError as error:
        print(f"error: {_describe(error, run)}", file=sys.stderr)
        return EXIT_API_ERROR
    except OmniError as error:
        if isinstance(error, InvalidRequest) and error.code is None:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_INVALID
        print(f"error: {_describe_omni(error)}", file=sys.stderr)
        return EXIT_API_ERROR
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"\n{_interrupted(run)}", file=sys.stderr)
        return EXIT_INTERRUPTED
