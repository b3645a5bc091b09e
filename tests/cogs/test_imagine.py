"""/imagine end to end: what members see in Discord, through the real discord.py, the fake
Discord and the Omniinfer emulator."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest

from tests.harness import image_bytes, one_image_per_message


async def emulator_image(emulator, task_id: str, index: int) -> bytes:
    url = f"{emulator.base_url}/images/{task_id}-{index}.png"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.read()


async def test_happy_path_defers_shows_progress_and_posts_the_emulators_pngs(harness):
    harness.emulator.duration = 2.0
    record = await harness.imagine(prompt="a red fox in snow", images=2, seed=42)
    await harness.finished(record)
    assert record.response_type == 5  # acknowledged at once: "thinking…"
    assert record.history[0].loading
    progress = record.history[1:-1]
    assert progress and all("Status" in s.text for s in progress)
    assert any("%" in s.text for s in progress)
    final = record.latest
    assert "Images ready" in final.text and "a red fox in snow" in final.text
    assert "42, 43" in final.text  # the real seeds, from Omniinfer's info
    assert f"<@{harness.world.alice.id}>" in final.text
    [task_id] = harness.emulator.stats.polls_by_task
    assert image_bytes(record) == [
        await emulator_image(harness.emulator, task_id, i) for i in range(2)
    ]
    assert harness.fake.rate_limited_count == 0
    assert harness.fake.unhandled == []


async def test_a_slow_backend_shows_percent_eta_and_a_preview_image(harness):
    harness.emulator.duration = 6.0
    record = await harness.imagine()
    await harness.finished(record, timeout=20)
    running = [s for s in record.history if "Generating" in s.text]
    assert running, [s.text for s in record.history]
    assert any("left" in s.text for s in running)
    previews = [e for s in running for e in s.embeds if e.get("image")]
    assert previews and previews[0]["image"]["url"].endswith("preview.png")
    shown = record.history[1:-1]  # progress edits; the final one is never held back
    gaps = [b.at - a.at for a, b in itertools.pairwise(shown)]
    assert min(gaps) >= 0.9  # throttled: at most about one progress edit a second
    assert harness.fake.rate_limited_count == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"steps": 80}, "steps"),
        ({"cfg_scale": 0.2}, "cfg_scale"),
        ({"seed": -5}, "seed"),
        ({"sampler": "DDIM"}, "sampler"),
        ({"size": "512x512"}, "size"),
        ({"images": 9}, "images"),
        ({"prompt": "   "}, "prompt"),
    ],
)
async def test_invalid_options_get_an_ephemeral_error_naming_the_option(harness, options, named):
    record = await harness.imagine(**options)
    await harness.answered(record)
    assert record.response_type == 4
    assert record.latest.ephemeral
    assert f"**{named}**" in record.latest.text
    assert harness.emulator.stats.tasks_created == 0


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"outcome": "fail", "reason": "NSFW content detected"}, "NSFW content detected"),
        ({"outcome": "timeout"}, "timed out"),
    ],
)
async def test_a_task_that_ends_badly_says_so_in_the_reply(harness, script, expected):
    async with aiohttp.ClientSession() as session:
        await session.post(f"{harness.emulator.base_url}/_emulator/tasks/next", json=script)
    record = await harness.imagine()
    await harness.finished(record)
    assert "❌" in record.latest.text
    assert expected in record.latest.text
    assert not record.latest.attachments


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda emu: setattr(emu, "api_key", "rotated"), "key was refused"),
        (lambda emu: setattr(emu, "credit", 0), "out of credit"),
        (lambda emu: emu.faults.add(_fault("txt2img", "code", code=5, times=10)), "not answering"),
        (lambda emu: emu.faults.add(_fault("txt2img", "http_status")), "did not confirm"),
    ],
)
async def test_backend_errors_end_in_a_clear_message(harness, setup, expected):
    setup(harness.emulator)
    record = await harness.imagine()
    await harness.finished(record)
    assert expected in record.latest.text
    assert "Traceback" not in record.said()


def _fault(endpoint, kind, **options):
    from omni.emulator import Fault

    return Fault(endpoint=endpoint, kind=kind, **options)


async def test_omniinfer_down_entirely_is_reported(harness):
    await harness.emulator.stop()
    record = await harness.imagine()
    await harness.finished(record, timeout=20)
    assert "not answering" in record.latest.text


async def test_a_long_prompt_is_truncated_to_fit_discords_embed_limits(harness):
    record = await harness.imagine(prompt="a very detailed castle " * 65)  # ~1500 chars
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    assert harness.fake.rejections == []


async def test_images_too_big_for_the_upload_limit_are_reencoded_or_split(harness):
    harness.world.guild.upload_limit = 400_000
    record = await harness.imagine(images=4)
    await harness.finished(record)

    def uploaded() -> list[bytes]:
        shown = [data for _, data in record.latest.attachments]
        return shown + [a.data for m in record.followups for a in m.attachments]

    await harness.fake.wait_for(lambda: len(uploaded()) == 4)
    total = uploaded()
    assert harness.fake.rejections == []
    assert all(len(data) <= 400_000 for data in total)


async def test_safety_terms_are_sent_outside_age_restricted_channels_but_never_shown(harness):
    public = await harness.imagine(prompt="a beach", negative_prompt="fog")
    private = await harness.imagine(
        member=harness.world.bob, channel=harness.world.nsfw, prompt="a beach"
    )
    await harness.finished(public)
    await harness.finished(private)
    sent = {task.job.negative_prompt for task in harness.emulator._tasks.values()}
    assert sent == {f"fog, {harness.bot.settings.safety_negative_prompt}", ""}
    assert "Negative prompt: fog" in public.latest.text  # only the member's own words
    assert "nsfw" not in public.latest.text.lower()
    assert "Negative prompt" not in private.latest.text
    details = await harness.click(harness.world.alice, public, "details")
    await harness.answered(details)
    assert "safety terms were added" in details.latest.text
    assert "nsfw" not in details.latest.text.lower()


async def test_reroll_makes_a_new_job_with_the_same_options_and_a_new_seed(harness):
    first = await harness.imagine(prompt="a cat", seed=7, steps=25)
    await harness.finished(first)
    second = await harness.click(harness.world.bob, first, "reroll")
    await harness.finished(second)
    assert "Images ready" in second.latest.text
    assert "Steps: 25" in second.latest.text
    assert "Seed: 7\n" not in second.latest.text + "\n"
    assert f"<@{harness.world.bob.id}>" in second.latest.text


async def test_details_answers_only_the_clicker_with_every_parameter(harness):
    first = await harness.imagine(prompt="a cat", seed=9)
    await harness.finished(first)
    details = await harness.click(harness.world.bob, first, "details")
    await harness.answered(details)
    assert details.latest.ephemeral
    for word in ("Model", "sd_xl_base_1.0", "Sampler", "Seeds: 9", "CFG scale"):
        assert word in details.latest.text


async def test_delete_is_refused_for_others_and_allowed_for_owner_and_moderators(harness):
    first = await harness.imagine()
    await harness.finished(first)
    refused = await harness.click(harness.world.bob, first, "delete")
    await harness.answered(refused)
    assert refused.latest.ephemeral and "Only the member" in refused.latest.text
    assert not first.original.deleted
    by_mod = await harness.click(harness.world.mod, first, "delete")
    await harness.answered(by_mod)
    await harness.fake.wait_for(lambda: first.original.deleted)
    second = await harness.imagine(member=harness.world.bob)
    await harness.finished(second)
    own = await harness.click(harness.world.bob, second, "delete")
    await harness.answered(own)
    await harness.fake.wait_for(lambda: second.original.deleted)


async def test_delete_removes_every_message_of_a_job_whose_images_were_split(harness):
    harness.world.guild.upload_limit = one_image_per_message("a lighthouse at dusk", 5, 3)
    record = await harness.imagine(images=3, seed=5)
    await harness.finished(record)
    await harness.fake.wait_for(lambda: len(record.followups) == 2)
    deleting = await harness.click(harness.world.alice, record, "delete")
    await harness.answered(deleting)
    await harness.fake.wait_for(
        lambda: record.original.deleted and all(m.deleted for m in record.followups)
    )


async def test_buttons_keep_working_after_a_restart(harness):
    first = await harness.imagine(prompt="a cat")
    await harness.finished(first)
    await harness.restart_bot()
    details = await harness.click(harness.world.bob, first, "details")
    await harness.answered(details)
    assert "a cat" in details.latest.text
    harness.clock.advance(60)  # past alice's cooldown: the Reroll must run, not be refused
    reroll = await harness.click(harness.world.alice, first, "reroll")
    await harness.finished(reroll)
    assert "Images ready" in reroll.latest.text and "a cat" in reroll.latest.text
    assert harness.emulator.stats.tasks_created == 2  # a new job, made after the restart


async def test_ten_members_at_once_all_get_their_images_without_a_single_429(harness):
    members = [harness.world.guild.add_member(f"member{i}") for i in range(10)]
    await harness.fake.sync_guild(harness.world.guild)
    records = await asyncio.gather(*(harness.imagine(member=m) for m in members))
    await asyncio.gather(*(harness.finished(r, timeout=30) for r in records))
    assert all("Images ready" in r.latest.text for r in records)
    assert all(len(image_bytes(r)) == 1 for r in records)
    assert harness.fake.rate_limited_count == 0


async def test_a_waiting_members_reply_is_edited_only_when_their_place_changes(harness):
    running, waiting = await harness.one_running_one_waiting(task_seconds=1.5)
    for name in ("carol", "dave", "erin"):  # each arrival re-ranks the line; bob stays first
        await harness.imagine(member=harness.world.guild.add_member(name))
    await harness.finished(running)
    await harness.finished(waiting, timeout=20)
    assert [s.text for s in waiting.history].count(waiting.history[1].text) == 1
    assert sum("position" in s.text for s in waiting.history) == 1


async def test_a_database_that_cannot_be_used_ends_in_a_clear_error_not_thinking(harness):
    await harness.bot.services.db.close()
    record = await harness.imagine()
    await harness.answered(record)
    said = record.said()
    assert "storage is unavailable" in said and "nothing was started or charged" in said
    assert all(m.ephemeral for m in (record.latest, *record.followups) if m is not None)
    assert harness.emulator.stats.tasks_created == 0


async def test_a_button_that_fails_answers_the_member_with_a_clear_error(harness):
    record = await harness.imagine()
    await harness.finished(record)
    harness.clock.advance(11)
    await harness.bot.services.db.close()
    reroll = await harness.click(harness.world.alice, record, "reroll")
    await harness.answered(reroll)
    assert "Something went wrong" in reroll.said()


async def test_sandbox_mode_runs_the_bundled_emulator_and_says_sandbox(harness):
    await harness.stop_bot()
    harness.settings_overrides = {
        "sandbox": True,
        "omni_base_url": "http://127.0.0.1:9",
        "sandbox_duration": 0.5,
        "omni_api_key": "sandbox",
    }
    await harness.start_bot()
    record = await harness.imagine()
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    assert "sandbox" in record.latest.text
    assert harness.emulator.stats.tasks_created == 0  # the external one was never used


async def test_a_rate_limited_edit_is_retried_and_the_final_state_still_lands(harness):
    harness.fake.force_rate_limit(r"/webhooks/.*/messages/", retry_after=0.3, times=2)
    record = await harness.imagine()
    await harness.finished(record)
    assert "Images ready" in record.latest.text


async def test_member_text_cannot_make_masked_links_or_markdown_in_the_reply(harness):
    record = await harness.imagine(prompt="[free nitro](https://evil.example) **loud**")
    await harness.finished(record)
    description = record.latest.embeds[0]["description"]
    assert "\\[free nitro]" in description  # shown as typed, not as a link
    assert "\\*\\*loud\\*\\*" in description
