"""The buttons under a finished job: what Discord is sent, and that every button sent is one
the registered dynamic items route back to its handler (by custom id, so after a restart too).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from cogs.utils.buttons import JOB_BUTTONS, ShareButton, result_view
from jobs.backend import Capabilities, Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from tests.harness import plain_capabilities

JOB_ID = "0123456789abcdef0123456789abcdef"
PRIMARY, SECONDARY, SUCCESS, DANGER = 1, 2, 3, 4


def a_job(kind: JobKind = JobKind.TXT2IMG, images: int = 1, job_id: str = JOB_ID) -> Job:
    return Job(
        id=job_id,
        kind=kind,
        state=JobState.DELIVERING,
        charge=Charge.RESERVED,
        cost=1,
        origin=Origin(1, 2, 3),
        request=Generation(prompt="a heron", images=images),
    )


def capabilities(*, upscale: bool, img2img: bool = False, subseed: bool = False) -> Capabilities:
    return plain_capabilities(upscale=upscale, img2img=img2img, subseed=subseed)


def button(custom_id: str, label: str, emoji: str, style: int = SECONDARY) -> dict[str, Any]:
    return {
        "type": 2,
        "custom_id": f"imagine:{custom_id}",
        "label": label,
        "emoji": {"name": emoji, "id": None},
        "style": style,
        "disabled": False,
    }


async def test_a_two_image_job_gets_four_rows_of_buttons_carrying_its_id():
    view = result_view(a_job(images=2), capabilities(upscale=True, subseed=True))

    assert view.to_components() == [
        {
            "type": 1,
            "components": [
                button(f"reroll:{JOB_ID}", "Reroll", "🎲", PRIMARY),
                button(f"share:{JOB_ID}", "Share", "📣", SUCCESS),
                button(f"details:{JOB_ID}", "Details", "🔎"),
                button(f"delete:{JOB_ID}", "Delete", "🗑️", DANGER),
            ],
        },
        {
            "type": 1,
            "components": [
                button(f"upscale:{JOB_ID}:0", "Upscale 1", "⬆️"),
                button(f"upscale:{JOB_ID}:1", "Upscale 2", "⬆️"),
            ],
        },
        {
            "type": 1,
            "components": [
                button(f"variation:{JOB_ID}:0:subtle", "1 subtle", "🔀"),
                button(f"variation:{JOB_ID}:1:subtle", "2 subtle", "🔀"),
            ],
        },
        {
            "type": 1,
            "components": [
                button(f"variation:{JOB_ID}:0:strong", "1 strong", "🔀"),
                button(f"variation:{JOB_ID}:1:strong", "2 strong", "🔀"),
            ],
        },
    ]


async def test_an_upscaled_job_can_be_shared_detailed_and_deleted_only():
    view = result_view(a_job(JobKind.UPSCALE), capabilities(upscale=True, img2img=True))

    [row] = view.to_components()
    assert [b["custom_id"] for b in row["components"]] == [
        f"imagine:share:{JOB_ID}",
        f"imagine:details:{JOB_ID}",
        f"imagine:delete:{JOB_ID}",
    ]


async def test_buttons_a_backend_cannot_serve_are_left_out():
    view = result_view(a_job(images=3), capabilities(upscale=False))

    [row] = view.to_components()
    assert [b["label"] for b in row["components"]] == ["Reroll", "Share", "Details", "Delete"]


async def test_jobs_of_one_shape_each_get_their_own_ids():
    caps = capabilities(upscale=True, img2img=True)
    first = result_view(a_job(job_id="a" * 32), caps).to_components()
    second = result_view(a_job(job_id="b" * 32), caps).to_components()

    assert str(first).replace("a" * 32, "b" * 32) == str(second)
    assert "b" * 32 not in str(first)


@pytest.mark.parametrize(
    ("kind", "images", "upscale", "img2img", "subseed"),
    list(itertools.product(JobKind, range(1, 5), *[(False, True)] * 3)),
)
async def test_every_button_sent_is_routed_to_an_item_that_shows_it_the_same(
    kind: JobKind, images: int, upscale: bool, img2img: bool, subseed: bool
):
    """A click finds its item by custom id among the registered dynamic items (as after a
    restart); that item, built from the id alone, renders exactly the button that was sent."""
    job = a_job(kind, images)
    caps = capabilities(upscale=upscale, img2img=img2img, subseed=subseed)
    sent = [b for row in result_view(job, caps).to_components() for b in row["components"]]

    assert sent
    for shown in sent:
        [(item_class, match)] = [
            (cls, m)
            for cls in (*JOB_BUTTONS, ShareButton)
            if (m := cls.__discord_ui_compiled_template__.fullmatch(shown["custom_id"]))
        ]
        item = await item_class.from_custom_id(None, None, match)
        assert item.job_id == job.id
        assert item.to_component_dict() == shown
