"""Mirror the installed ``retentio`` namespace as a tree of links, for the static checks.

setuptools installs the folders ``features/``, ``training/`` ... as ``retentio.features``,
``retentio.training`` ... (``[tool.setuptools.package-dir]`` in pyproject.toml); the editable
install resolves that mapping at import time, which mypy and import-linter cannot follow. This
script writes ``.typecheck/retentio/`` with the same layout as the wheel (real folders, each
``.py`` file a symlink to its source), read from the same pyproject table, so
``MYPYPATH=.typecheck mypy -p retentio`` and ``lint-imports`` (with ``PYTHONPATH=.typecheck``)
see exactly the installed package.

Usage: ``python scripts/link_tree.py [OUT]`` (default ``.typecheck``); prints OUT.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    if out.exists():
        shutil.rmtree(out)
    for package in config["packages"]:
        # a package's folder: its own mapping, else its parent's folder plus its last name
        parts = package.split(".")
        for i in range(len(parts), 0, -1):
            head = ".".join(parts[:i])
            if head in mapping:
                source = ROOT / mapping[head] / Path(*parts[i:])
                break
        else:
            source = ROOT / Path(*parts)
        target = out / Path(*parts)
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.py")):
            (target / path.name).symlink_to(path)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".typecheck")
