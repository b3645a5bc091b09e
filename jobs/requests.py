"""From what a member typed to a valid SDXL request, under the chosen backend's rules.

Every option is checked here, before any credit is reserved or any HTTP call made; a bad one
raises `InvalidOption` naming the option as the member sees it. The wording of the error is
the presentation layer's (`cogs/utils/wording.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from jobs.backend import MAX_SEED, RANDOM_SEED, Bounds, Capabilities, Generation
from quota.blocklist import is_blank

# The APIs do not document prompt limits. SDXL reads prompts in 77-token chunks and A1111
# concatenates them, so long prompts work, but past ~1500 characters they only dilute.
PROMPT_LENGTH = 1500
NEGATIVE_PROMPT_LENGTH = 1500
SEED = Bounds(0, MAX_SEED)
STRENGTH = Bounds(0.0, 1.0)
DEFAULT_STRENGTH = 0.6
DEFAULT_STEPS = 20
DEFAULT_CFG_SCALE = 7.0
DEFAULT_SIZE = (1024, 1024)
# SDXL 1.0 was trained with aspect-ratio bucketing at about one megapixel; these buckets are
# native to it (other sizes draw duplicated subjects and cropped heads) and cost the same.
SDXL_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)
# Variations: how far from the chosen image. With a variation seed (A1111's subseed), the
# strength is how much of the other noise is blended in; by image-to-image, the denoising
# strength. Subtle keeps composition and colours; strong keeps the idea of it.
VARIATION_SUBSEED_STRENGTH = {False: 0.15, True: 0.4}
VARIATION_DENOISING = {False: 0.35, True: 0.6}


class Problem(StrEnum):
    MISSING = "missing"  # not given, or not text
    EMPTY = "empty"  # only spaces or invisible characters
    TOO_LONG = "too_long"  # `allowed` is the maximum length
    OUT_OF_RANGE = "out_of_range"  # `allowed` is the range
    NOT_OFFERED = "not_offered"  # `allowed` lists the choices
    NOT_SUPPORTED = "not_supported"  # the backend lacks the feature


class InvalidOption(Exception):
    """An option the member gave is not acceptable; nothing was reserved or sent.

    `option` is the option's name in `/imagine`; `allowed` what it accepts; `got` a short
    form of the value (None when it is too long or not worth echoing).
    """

    def __init__(
        self, option: str, problem: Problem, *, allowed: str = "", got: str | None = None
    ) -> None:
        super().__init__(f"{option}: {problem.value}")
        self.option = option
        self.problem = problem
        self.allowed = allowed
        self.got = got


@dataclass(frozen=True)
class ImagineOptions:
    """The options of `/imagine`, exactly as the member gave them (None: not given)."""

    prompt: object
    negative_prompt: object = None
    sampler: object = None
    steps: object = None
    cfg_scale: object = None
    seed: object = None
    size: object = None
    images: object = None
    strength: object = None


def size_label(width: int, height: int) -> str:
    return f"{width}x{height}"


def parse_size(label: str, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
    """`"1216x832"` → `(1216, 832)` when it is one of `sizes`, else None."""
    try:
        width, height = (int(part) for part in label.lower().split("x"))
    except ValueError:
        return None
    return (width, height) if (width, height) in sizes else None


def build_request(
    options: ImagineOptions,
    capabilities: Capabilities,
    *,
    age_restricted: bool,
    safety_negative_prompt: str,
    init_image: bytes | None = None,
) -> Generation:
    """A validated request; raises `InvalidOption` naming the first option at fault.

    Outside age-restricted channels the server's safety terms go with the request, apart
    from the member's words (see `Generation.for_backend`).
    """
    caps = capabilities
    prompt = _text("prompt", options.prompt, PROMPT_LENGTH, required=True)
    negative = _text("negative_prompt", options.negative_prompt, NEGATIVE_PROMPT_LENGTH)
    sampler = caps.default_sampler if options.sampler is None else options.sampler
    if not isinstance(sampler, str) or sampler not in caps.samplers:
        raise InvalidOption(
            "sampler", Problem.NOT_OFFERED, allowed=", ".join(caps.samplers), got=_short(sampler)
        )
    steps = _number("steps", options.steps, DEFAULT_STEPS, caps.steps, whole=True)
    cfg_scale = _number("cfg_scale", options.cfg_scale, DEFAULT_CFG_SCALE, caps.cfg_scale)
    seed = _seed(options.seed)
    width, height = _size(options.size, caps.sizes)
    images = _number("images", options.images, 1, Bounds(1, caps.max_images), whole=True)
    strength: float | None = None
    if init_image is not None:
        if not caps.img2img:
            raise InvalidOption("image", Problem.NOT_SUPPORTED)
        strength = float(_number("strength", options.strength, DEFAULT_STRENGTH, STRENGTH))
    return Generation(
        prompt=prompt,
        negative_prompt=negative,
        sampler=sampler,
        steps=int(steps),
        cfg_scale=float(cfg_scale),
        seed=seed,
        width=width,
        height=height,
        images=int(images),
        init_image=init_image,
        denoising_strength=strength,
        safety_negative_prompt="" if age_restricted else safety_negative_prompt.strip(),
    )


def reroll(request: Generation) -> Generation:
    """The same request with a fresh random seed."""
    return replace(request, seed=RANDOM_SEED, subseed=RANDOM_SEED, subseed_strength=0.0)


def variation(request: Generation, *, seed: int, strong: bool, by_subseed: bool) -> Generation:
    """A variation of the image made with `seed`.

    A neighbouring seed gives an unrelated picture in Stable Diffusion, so variations keep
    the image's own seed and either blend in a little noise from random variation seeds
    (`by_subseed`: the backend supports A1111's subseed; one variation per image asked for)
    or start from the picture itself (image-to-image; the runner fetches the picture).
    """
    if by_subseed:
        return replace(
            request,
            seed=seed,
            subseed=RANDOM_SEED,
            subseed_strength=VARIATION_SUBSEED_STRENGTH[strong],
        )
    return replace(
        request,
        seed=RANDOM_SEED,
        subseed=RANDOM_SEED,
        subseed_strength=0.0,
        denoising_strength=VARIATION_DENOISING[strong],
    )


def with_channel_rules(
    request: Generation, *, age_restricted: bool, safety_negative_prompt: str
) -> Generation:
    """`request` under the safety rules of the channel it runs in now (a Reroll or Variation
    pressed in another channel follows that channel's rules, not the original's)."""
    terms = "" if age_restricted else safety_negative_prompt.strip()
    return replace(request, safety_negative_prompt=terms)


def _short(value: object, limit: int = 40) -> str | None:
    text = repr(value)
    return text if len(text) <= limit else None


def _text(option: str, value: object, limit: int, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidOption(option, Problem.MISSING)
    text = value.strip()
    if required and is_blank(text):
        raise InvalidOption(option, Problem.EMPTY)
    if len(text) > limit:
        raise InvalidOption(option, Problem.TOO_LONG, allowed=str(limit), got=str(len(text)))
    return text


def _number(
    option: str, value: object, default: float, bounds: Bounds, *, whole: bool = False
) -> float:
    if value is None:
        return default
    number = _finite(value)
    if number is None or number not in bounds or (whole and not number.is_integer()):
        raise InvalidOption(
            option, Problem.OUT_OF_RANGE, allowed=bounds.describe(), got=_short(value)
        )
    return number


def _finite(value: object) -> float | None:
    """A real number (not a bool, NaN or infinity) as a float; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _seed(value: object) -> int:
    if value is None or value == RANDOM_SEED:
        return RANDOM_SEED
    if isinstance(value, bool) or not isinstance(value, int) or value not in SEED:
        raise InvalidOption(
            "seed", Problem.OUT_OF_RANGE, allowed=f"-1 or {SEED.describe()}", got=_short(value)
        )
    return value


def _size(value: object, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    if value is None:
        return DEFAULT_SIZE if DEFAULT_SIZE in sizes else sizes[0]
    size = parse_size(value, sizes) if isinstance(value, str) and len(value) < 20 else None
    if size is None:
        raise InvalidOption(
            "size",
            Problem.NOT_OFFERED,
            allowed=", ".join(size_label(w, h) for w, h in sizes),
            got=_short(value),
        )
    return size
