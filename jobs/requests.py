"""From what a member typed to a valid SDXL request, with the bot's own product rules."""

from __future__ import annotations

from dataclasses import dataclass, replace

from omni import InvalidRequest, Txt2ImgRequest, rules

IMAGES_PER_JOB = rules.Bounds(1, 4)


@dataclass(frozen=True)
class ImagineOptions:
    """The options of `/imagine`, exactly as the member gave them (None: not given)."""

    prompt: str
    negative_prompt: str | None = None
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    size: str | None = None
    images: int | None = None


def build_request(
    options: ImagineOptions, *, age_restricted: bool, safety_negative_prompt: str
) -> Txt2ImgRequest:
    """A validated request; raises `InvalidRequest` naming the option at fault.

    Outside age-restricted channels the guild's safety negative prompt is appended to the
    member's own, so SDXL steers away from what the channel does not allow.
    """
    images = 1 if options.images is None else options.images
    if images not in IMAGES_PER_JOB:
        raise InvalidRequest(
            f"images: must be a whole number from {IMAGES_PER_JOB.describe()} (got {images})",
            field="images",
        )
    width, height = rules.DEFAULT_SIZE
    if options.size is not None:
        size = rules.parse_size(options.size)
        if size is None:
            sizes = ", ".join(rules.size_label(w, h) for w, h in rules.SDXL_SIZES)
            raise InvalidRequest(
                f"size: {options.size!r} is not an SDXL 1.0 size; choose one of: {sizes}",
                field="size",
            )
        width, height = size
    negative = (options.negative_prompt or "").strip()
    if not age_restricted and safety_negative_prompt:
        negative = f"{negative}, {safety_negative_prompt}" if negative else safety_negative_prompt
    request = Txt2ImgRequest(
        prompt=options.prompt.strip(),
        negative_prompt=negative,
        sampler_name=options.sampler or rules.DEFAULT_SAMPLER,
        steps=rules.DEFAULT_STEPS if options.steps is None else options.steps,
        cfg_scale=rules.DEFAULT_CFG_SCALE if options.cfg_scale is None else options.cfg_scale,
        seed=rules.RANDOM_SEED if options.seed is None else options.seed,
        width=width,
        height=height,
        batch_size=images,
    )
    request.validate()
    return request


def reroll(request: Txt2ImgRequest) -> Txt2ImgRequest:
    """The same request with a fresh random seed."""
    return replace(request, seed=rules.RANDOM_SEED)
