"""The built wheel installs one top-level package, ``retentio`` (the folders live inside it)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_retentio_as_its_only_top_level_package(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("retentio-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    top = sorted(
        p.name
        for p in Path(site).iterdir()
        if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    )
    assert top == ["retentio"]
    installed = Path(site) / "retentio"
    for package in ("configs", "features", "training", "serving", "monitoring", "shell"):
        assert (installed / package / "__init__.py").is_file(), package
    assert (installed / "configs" / "default.yaml").is_file()
