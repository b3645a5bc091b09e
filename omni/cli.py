"""`python -m omni`: check a key and the API from a shell before inviting the bot anywhere.

Exit codes: 0 success, 1 the API said no (bad key, out of credit, task failed...), 2 invalid
input (the message names the field).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tqdm import tqdm

from omni import rules
from omni.client import DEFAULT_BASE_URL, OmniClient
from omni.errors import (
    AuthenticationError,
    InsufficientCredit,
    InvalidRequest,
    OmniError,
    TaskFailed,
    TaskTimedOut,
)
from omni.models import TaskStatus, Txt2ImgRequest

EXIT_OK, EXIT_API_ERROR, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--key", help="API key (default: $OMNI_API_KEY)")
    connection.add_argument(
        "--base-url",
        default=os.environ.get("OMNI_BASE_URL") or DEFAULT_BASE_URL,
        help="API base URL (default: $OMNI_BASE_URL or %(default)s)",
    )
    parser = argparse.ArgumentParser(prog="python -m omni", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "txt2img", parents=[connection], help="generate SDXL 1.0 images and save them as PNG"
    )
    gen.add_argument("prompt")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--sampler", default=rules.DEFAULT_SAMPLER, help="an SDXL sampler name")
    gen.add_argument("--steps", type=int, default=rules.DEFAULT_STEPS)
    gen.add_argument("--cfg-scale", type=float, default=rules.DEFAULT_CFG_SCALE)
    gen.add_argument("--seed", type=int, default=rules.RANDOM_SEED, help="-1 for random")
    gen.add_argument("--batch-size", type=int, default=1)
    gen.add_argument(
        "--size",
        default=rules.size_label(*rules.DEFAULT_SIZE),
        help="WIDTHxHEIGHT, one of: "
        + ", ".join(rules.size_label(w, h) for w, h in rules.SDXL_SIZES),
    )
    gen.add_argument("--model", default=rules.SDXL_MODEL)
    gen.add_argument("--out", type=Path, default=Path("."), help="directory for the PNGs")

    listing = commands.add_parser(
        "models", parents=[connection], help="list the models the API offers"
    )
    listing.add_argument("--type", choices=["checkpoint", "vae", "controlnet"])
    return parser


def _api_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("OMNI_API_KEY", "")
    if not key:
        raise UsageError("OMNI_API_KEY is not set: export it or pass --key")
    return key


def _request(args: argparse.Namespace) -> Txt2ImgRequest:
    size = rules.parse_size(args.size)
    if size is None:
        sizes = ", ".join(rules.size_label(w, h) for w, h in rules.SDXL_SIZES)
        raise InvalidRequest(f"size: {args.size!r} is not an SDXL 1.0 size; use one of: {sizes}")
    request = Txt2ImgRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        sampler_name=args.sampler,
        steps=args.steps,
        cfg_scale=args.cfg_scale,
        seed=args.seed,
        width=size[0],
        height=size[1],
        batch_size=args.batch_size,
        model_name=args.model,
    )
    request.validate()
    return request


async def _txt2img(client: OmniClient, args: argparse.Namespace) -> int:
    request = _request(args)
    submission = await client.txt2img(request)
    if submission.warning:
        print(f"warning: {submission.warning}", file=sys.stderr)
    with tqdm(total=100, unit="%", desc="queued", file=sys.stderr, leave=False) as bar:
        async for progress in client.wait(submission.task_id):
            bar.set_description("running" if progress.status is TaskStatus.RUNNING else "queued")
            bar.update(round(progress.progress * 100) - bar.n)
            bar.set_postfix_str(f"eta {progress.eta_relative:.0f}s")
        final = progress
    images = await client.download(final.images)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = final.info.all_seeds if final.info else ()
    for index, data in enumerate(images):
        seed = seeds[index] if index < len(seeds) else None
        name = f"{submission.task_id[:8]}-{index}" + (f"-seed{seed}" if seed is not None else "")
        path = args.out / f"{name}.png"
        path.write_bytes(data)
        print(path)
    return EXIT_OK


async def _models(client: OmniClient, args: argparse.Namespace) -> int:
    for model in await client.models(args.type):
        print(f"{model.type}\t{model.name}")
    return EXIT_OK


def _describe(error: OmniError) -> str:
    if isinstance(error, AuthenticationError):
        return f"bad API key: {error}"
    if isinstance(error, InsufficientCredit):
        return f"out of credit: {error}"
    if isinstance(error, TaskFailed):
        return f"generation failed: {error.reason or 'no reason given'}"
    if isinstance(error, TaskTimedOut):
        return f"timed out: {error}"
    return f"API error: {error}"


async def _run(args: argparse.Namespace) -> int:
    async with OmniClient(_api_key(args), base_url=args.base_url) as client:
        if args.command == "txt2img":
            return await _txt2img(client, args)
        return await _models(client, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (UsageError, InvalidRequest) as error:
        if isinstance(error, InvalidRequest) and error.code is not None:
            print(f"error: the API refused the request: {error}", file=sys.stderr)
            return EXIT_API_ERROR
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except OmniError as error:
        print(f"error: {_describe(error)}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return 130
