"""`python -m omni`, end to end as subprocesses against the emulators in their own processes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
KEY = "cli-test-key-5e6f7a"
HAS_A1111 = importlib.util.find_spec("backends.a1111") is not None


def start(*command: str) -> tuple[subprocess.Popen[str], str]:
    """Start an emulator; returns the process and the base URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", *command, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert "listening on" in line, line
    return process, line.rsplit(" ", 1)[-1].strip()


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    assert process.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    process, url = start("omni.emulator", "--key", KEY, "--duration", "0.5")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    """Tasks that take a minute: for interrupting, and for giving up waiting."""
    process, url = start("omni.emulator", "--key", KEY, "--duration", "60")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def novita_url() -> Iterator[str]:
    process, url = start("omni.emulator", "--api", "v3", "--key", KEY, "--duration", "0.5")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def a1111_url() -> Iterator[str]:
    process, url = start("a1111.emulator", "--duration", "0.3")
    yield url
    stop(process)


def control(base_url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """The emulator's unauthenticated control routes (stats, credit)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"{base_url}/_emulator/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def environment(key: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMNI_API_KEY", "OMNI_BASE_URL", "A1111_URLS", "A1111_AUTH")
    }
    if key is not None:
        env["OMNI_API_KEY"] = key
    return {**env, **extra}


def omni(*args: str, key: str | None = KEY, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omni", *args],
        cwd=ROOT,
        env=environment(key, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_frame(stderr: str) -> str:
    """What the terminal shows last of the progress bar (tqdm redraws with \\r)."""
    lines = [line for line in stderr.replace("\r", "\n").split("\n") if "%|" in line]
    return lines[-1].strip() if lines else ""


def tasks_created(base_url: str) -> int:
    return control(base_url, "stats")["tasks_created"]


# -- txt2img, per backend ------------------------------------------------------------------


def test_txt2img_writes_the_pngs_and_prints_their_paths(emulator_url, tmp_path):
    result = omni(
        "txt2img",
        "a red fox",
        "--seed",
        "7",
        "--batch-size",
        "2",
        "--size",
        "1216x832",
        "--out",
        str(tmp_path / "new" / "dir"),
        "--base-url",
        emulator_url,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(p) for p in result.stdout.split()]
    assert len(paths) == 2
    assert paths[0].name.endswith("-0-seed7.png") and paths[1].name.endswith("-1-seed8.png")
    with Image.open(paths[0]) as image:
        assert image.size == (1216, 832)
    assert not list((tmp_path / "new" / "dir").glob(".omni-probe-*"))


def test_the_progress_bar_ends_at_done_with_one_eta(emulator_url, tmp_path):
    result = omni("txt2img", "x", "--out", str(tmp_path), "--base-url", emulator_url)
    assert result.returncode == 0, result.stderr
    final = last_frame(result.stderr)
    assert final.startswith("done: 100%"), final
    assert final.count("eta") == 1 and final.endswith("eta 0s")
    assert "<" not in final  # tqdm's own elapsed<remaining figure is not shown
    frames = result.stderr.replace("\r", "\n")
    assert "queued: 100%" not in frames and "running: 100%" not in frames


def test_txt2img_through_novita(novita_url, tmp_path):
    result = omni(
        "txt2img",
        "a blue jay",
        "--backend",
        "novita",
        "--seed",
        "11",
        "--out",
        str(tmp_path),
        "--base-url",
        novita_url,
    )
    assert result.returncode == 0, result.stderr
    (path,) = (Path(p) for p in result.stdout.split())
    assert path.name.endswith("-0-seed11.png")
    with Image.open(path) as image:
        assert image.size == (1024, 1024)
    assert last_frame(result.stderr).startswith("done: 100%")


@pytest.mark.skipif(not HAS_A1111, reason="backends.a1111 is not written yet")
def test_txt2img_through_a1111_from_a1111_urls(a1111_url, tmp_path):
    result = omni(
        "txt2img",
        "a heron",
        "--backend",
        "a1111",
        "--seed",
        "5",
        "--size",
        "832x1216",
        "--out",
        str(tmp_path),
        key=None,  # a self-hosted server needs no API key
        A1111_URLS=f"{a1111_url}, http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    (path,) = (Path(p) for p in result.stdout.split())
    with Image.open(path) as image:
        assert image.size == (832, 1216)


@pytest.mark.skipif(not HAS_A1111, reason="backends.a1111 is not written yet")
def test_a1111_takes_no_model_option(a1111_url, tmp_path):
    result = omni(
        "txt2img", "x", "--backend", "a1111", "--model", "m.safetensors", "--base-url", a1111_url
    )
    assert result.returncode == 2 and "--model" in result.stderr


def test_a1111_without_a_server_address_says_how_to_give_one():
    result = omni("txt2img", "x", "--backend", "a1111", key=None)
    assert result.returncode == 2 and "A1111_URLS" in result.stderr


# -- models --------------------------------------------------------------------------------


def test_models_lists_sdxl_and_the_samplers(emulator_url):
    result = omni("models", "--base-url", emulator_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "checkpoint\tsd_xl_base_1.0.safetensors" in lines
    assert "sampler\tDPM++ SDE Karras" in lines and "sampler\tDDIM" not in lines


def test_models_filters_by_type(emulator_url):
    vaes = omni("models", "--type", "vae", "--base-url", emulator_url).stdout.splitlines()
    assert vaes and all(line.startswith("vae\t") for line in vaes)
    samplers = omni("models", "--type", "sampler", "--base-url", emulator_url).stdout
    assert samplers and all(line.startswith("sampler\t") for line in samplers.splitlines())


def test_models_through_novita_lists_its_samplers(novita_url):
    result = omni("models", "--backend", "novita", "--base-url", novita_url)
    assert result.returncode == 0, result.stderr
    assert "sampler\tDPM++ 2M Karras" in result.stdout.splitlines()


@pytest.mark.skipif(not HAS_A1111, reason="backends.a1111 is not written yet")
def test_models_through_a1111_lists_its_checkpoints(a1111_url):
    result = omni("models", "--backend", "a1111", "--base-url", a1111_url, key=None)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("checkpoint\t") for line in result.stdout.splitlines())
    assert any(line.startswith("sampler\t") for line in result.stdout.splitlines())


# -- invalid input: exit 2, nothing submitted ----------------------------------------------


@pytest.mark.parametrize(
    ("option", "field"),
    [
        (["--cfg-scale", "40"], "cfg_scale"),
        (["--sampler", "DDIM"], "sampler"),
        (["--size", "512x512"], "size"),
        (["--size", "big"], "size"),
        (["--batch-size", "5"], "batch_size"),
        (["--steps", "0"], "steps"),
        (["--seed", "-5"], "seed"),
    ],
)
def test_invalid_input_exits_2_naming_the_field(emulator_url, option, field):
    before = tasks_created(emulator_url)
    result = omni("txt2img", "x", *option, "--base-url", emulator_url)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr
    assert tasks_created(emulator_url) == before


def test_an_out_that_cannot_be_written_is_found_before_submitting(emulator_url, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    before = tasks_created(emulator_url)
    result = omni("txt2img", "x", "--out", str(blocker / "images"), "--base-url", emulator_url)
    assert result.returncode == 2
    assert "--out" in result.stderr and "submitted" not in result.stderr
    assert tasks_created(emulator_url) == before  # nothing paid for


def test_a_missing_key_exits_2_and_says_how_to_fix_it(emulator_url):
    result = omni("models", "--base-url", emulator_url, key=None)
    assert result.returncode == 2
    assert "OMNI_API_KEY" in result.stderr


# -- the API said no: exit 1 ---------------------------------------------------------------


def test_a_bad_key_exits_1_and_says_so(emulator_url):
    for command in (["models"], ["txt2img", "x"]):
        result = omni(*command, "--base-url", emulator_url, "--key", "wrong-key-1234")
        assert result.returncode == 1, result.stderr
        assert "bad API key" in result.stderr
        assert "wrong-key-1234" not in result.stderr


def test_a_bad_key_on_novita_exits_1(novita_url):
    result = omni("txt2img", "x", "--backend", "novita", "--base-url", novita_url, key="nope-99")
    assert result.returncode == 1 and "bad API key" in result.stderr
    assert "nope-99" not in result.stderr


def test_running_out_of_credit_exits_1_and_says_so(emulator_url, tmp_path):
    control(emulator_url, "credit", {"images": 1})
    try:
        result = omni(
            "txt2img", "x", "--batch-size", "2", "--out", str(tmp_path), "--base-url", emulator_url
        )
    finally:
        control(emulator_url, "credit", {"images": None})
    assert result.returncode == 1
    assert "out of credit" in result.stderr


def test_a_failed_task_exits_1_with_the_reason(emulator_url, tmp_path):
    control(emulator_url, "tasks/next", {"outcome": "fail", "reason": "GPU fell over"})
    result = omni("txt2img", "x", "--out", str(tmp_path), "--base-url", emulator_url)
    assert result.returncode == 1
    assert "generation failed: GPU fell over" in result.stderr


def test_giving_up_waiting_names_the_task_that_may_still_be_billed(slow_url, tmp_path):
    result = omni("txt2img", "x", "--max-wait", "1", "--out", str(tmp_path), "--base-url", slow_url)
    assert result.returncode == 1
    task = result.stderr.split("task ", 1)[1].split()[0]
    assert f"task {task} may still finish, and be billed" in result.stderr


# -- Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_names_the_task_that_may_still_be_billed_and_exits_130(slow_url, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "omni", "txt2img", "x", "--out", str(tmp_path)],
        cwd=ROOT,
        env=environment(KEY, OMNI_BASE_URL=slow_url),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()  # printed once the API has the task
        assert line.startswith("task ") and "submitted" in line, line
        task = line.split()[1]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert f"task {task}" in stderr and "billed" in stderr
    assert "Traceback" not in stderr
    assert not list(tmp_path.glob("*.png"))
