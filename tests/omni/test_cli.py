"""`python -m omni` and `python -m omni.emulator`, end to end as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
KEY = "cli-test-key"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omni.emulator",
            "--port",
            "0",
            "--key",
            KEY,
            "--duration",
            "0.5",
            "--credit",
            "3",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert "listening on" in line
    yield line.rsplit(" ", 1)[-1].strip()
    process.terminate()
    assert process.wait(timeout=10) == 0


def omni(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMNI_API_KEY"}
    if key is not None:
        env["OMNI_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "omni", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
        str(tmp_path),
        "--base-url",
        emulator_url,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(p) for p in result.stdout.split()]
    assert len(paths) == 2 and all("seed" in p.name for p in paths)
    with Image.open(paths[0]) as image:
        assert image.size == (1216, 832)


def test_models_lists_sdxl(emulator_url):
    result = omni("models", "--base-url", emulator_url)
    assert result.returncode == 0
    assert "sd_xl_base_1.0.safetensors" in result.stdout


def test_invalid_input_exits_2_naming_the_field(emulator_url):
    result = omni("txt2img", "x", "--cfg-scale", "40", "--base-url", emulator_url)
    assert result.returncode == 2
    assert "cfg_scale" in result.stderr


def test_a_missing_key_exits_2_and_says_how_to_fix_it(emulator_url):
    result = omni("models", "--base-url", emulator_url, key=None)
    assert result.returncode == 2
    assert "OMNI_API_KEY" in result.stderr


def test_a_bad_key_exits_1_and_says_so(emulator_url):
    result = omni("models", "--base-url", emulator_url, "--key", "wrong")
    assert result.returncode == 1
    assert "bad API key" in result.stderr
    assert "wrong" not in result.stderr.replace("bad API key", "")


def test_running_out_of_credit_exits_1_and_says_so(emulator_url, tmp_path):
    result = omni(
        "txt2img", "x", "--batch-size", "4", "--out", str(tmp_path), "--base-url", emulator_url
    )
    assert result.returncode == 1
    assert "out of credit" in result.stderr
