"""What Omniinfer accepts, and what SDXL 1.0 should be asked for, stated once as data.

The API-wide facts (`API_*`) are what the server enforces (the emulator uses them); the SDXL
rules are stricter and are what this client validates before spending any credit. The Discord
layer builds its option declarations (ranges, choices) from the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass

SDXL_MODEL = "sd_xl_base_1.0.safetensors"

# Every sampler name the v2 reference accepts; anything else is envelope code 8.
API_SAMPLERS: tuple[str, ...] = (
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Karras",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2M SDE Heun Karras",
    "DPM++ 2M SDE Heun Exponential",
    "DPM++ 3M SDE",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
    "DPM fast",
    "DPM adaptive",
    "LMS Karras",
    "DPM2 Karras",
    "DPM2 a Karras",
    "DPM++ 2S a Karras",
    "Restart",
    "DDIM",
    "PLMS",
    "UniPC",
)

# The seed document warns these "may not be supported by SDXL 1.0".
SDXL_UNSUPPORTED_SAMPLERS = frozenset({"DDIM", "PLMS", "UniPC"})
SDXL_SAMPLERS: tuple[str, ...] = tuple(
    s for s in API_SAMPLERS if s not in SDXL_UNSUPPORTED_SAMPLERS
)
DEFAULT_SAMPLER = "DPM++ SDE Karras"


@dataclass(frozen=True)
class Bounds:
    """An inclusive numeric range, with the wording used when a value falls outside it."""

    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{_fmt(self.low)}–{_fmt(self.high)}"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# Server-side ranges (Novita v2 reference): out of range → envelope code 6. The reference
# writes some as half-open, e.g. steps (0, 50]; for integers that is 1..50.
API_STEPS = Bounds(1, 50)
API_CFG_SCALE = Bounds(0.0, 30.0)  # exclusive at 0: checked separately by the emulator
API_DIMENSION = Bounds(1, 2048)
API_BATCH = Bounds(0, 8)
API_UPSCALE_FACTOR = Bounds(1.0, 4.0)
API_MAX_EXPIRE_TTL = 604_800

# SDXL rules applied by this client before any HTTP call.
STEPS = Bounds(1, 50)
DEFAULT_STEPS = 20
CFG_SCALE = Bounds(1.0, 30.0)  # below 1 classifier-free guidance only weakens the prompt
DEFAULT_CFG_SCALE = 7.0
SEED = Bounds(0, 2**32 - 1)  # or -1 for "pick one at random"
RANDOM_SEED = -1
BATCH_SIZE = Bounds(1, 8)
N_ITER = Bounds(1, 8)
# The API does not document prompt limits. SDXL reads prompts in 77-token chunks and A1111
# concatenates them, so long prompts work, but past ~1500 characters they only dilute.
PROMPT_LENGTH = Bounds(1, 1500)
NEGATIVE_PROMPT_LENGTH = Bounds(0, 1500)

# SDXL 1.0 was trained with aspect-ratio bucketing at about one megapixel; these are those
# buckets. The seed says "images size should be 1024*1024" to steer users away from SD 1.5
# sizes such as 512×512; the other ~1 MP buckets are equally native to SDXL, cost the same
# (price scales with pixels) and give portrait and landscape framing. Nothing else is offered:
# sizes off the buckets produce duplicated subjects and cropped heads.
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
DEFAULT_SIZE = (1024, 1024)

# Image-to-image: how far from the starting picture (0 keeps it, 1 ignores it); the SDK's
# default. The picture is sent base64 in the JSON body, so its size is capped.
DENOISING_STRENGTH = Bounds(0.0, 1.0)
DEFAULT_DENOISING_STRENGTH = 0.75
MAX_INIT_IMAGE_BYTES = 10 * 1024 * 1024

# Upscale: Omniinfer's upscaler with the factors worth paying for.
DEFAULT_UPSCALER = "R-ESRGAN 4x+"
UPSCALE_FACTOR = Bounds(1.0, 4.0)
DEFAULT_UPSCALE_FACTOR = 2.0


def prompt_problem(prompt: object, negative_prompt: object) -> tuple[str, str] | None:
    """The first problem with a request's prompts, as (field, message), or None: the same
    rules for the v2 and v3 APIs. Worded only when there is one (it runs once per submit)."""
    if not (isinstance(prompt, str) and prompt.strip()):
        return "prompt", "must not be empty"
    if len(prompt) > PROMPT_LENGTH.high:
        return "prompt", f"must be at most {PROMPT_LENGTH.high:.0f} characters (got {len(prompt)})"
    if not isinstance(negative_prompt, str):
        return "negative_prompt", "must be text"
    if len(negative_prompt) > NEGATIVE_PROMPT_LENGTH.high:
        limit = NEGATIVE_PROMPT_LENGTH.high
        return (
            "negative_prompt",
            f"must be at most {limit:.0f} characters (got {len(negative_prompt)})",
        )
    return None


def size_label(width: int, height: int) -> str:
    return f"{width}x{height}"


def parse_size(label: str) -> tuple[int, int] | None:
    """`"1216x832"` → `(1216, 832)` when it is one of the SDXL sizes, else None."""
    try:
        width, height = (int(part) for part in label.lower().split("x"))
    except ValueError:
        return None
    return (width, height) if (width, height) in SDXL_SIZES else None
