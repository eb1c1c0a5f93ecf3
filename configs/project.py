"""The project file: the data folder and config a working folder's commands use by default.

``retentio init --data D --config C`` writes ``retentio.project.yaml`` in the working folder;
later commands run there take ``--data`` and ``--config`` from it when they are not given (a
flag always wins). The paths are stored absolute, so the file keeps working from scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from retentio.errors import ConfigError

__all__ = ["PROJECT_FILE", "Project", "read_project", "write_project"]

PROJECT_FILE = "retentio.project.yaml"


@dataclass(frozen=True)
class Project:
    """What a project file holds.

    Attributes
    ----------
    data
        The data folder.
    config
        The config file, or None for the defaults.
    path
        The project file itself.
    """

    data: Path
    config: Path | None
    path: Path


def read_project(folder: Path | None = None) -> Project | None:
    """The project file of ``folder`` (default: the working folder), or None when absent.

    Raises
    ------
    ConfigError
        The file exists but is not a mapping with ``data`` (the message names the file and the
        fix).
    """
    path = Path(folder or Path.cwd()) / PROJECT_FILE
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML ({exc}); rewrite it with `retentio init`"
        ) from None
    if not isinstance(raw, dict) or not raw.get("data"):
        raise ConfigError(f"{path}: needs a 'data' folder; rewrite it with `retentio init`")
    unknown = sorted(set(raw) - {"data", "config"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; only data and config are read")
    config = raw.get("config")
    return Project(Path(raw["data"]), Path(config) if config else None, path)


def write_project(data: Path, config: Path | None, folder: Path | None = None) -> Project:
    """Write the project file (absolute paths) into ``folder`` (default: the working folder).

    Raises
    ------
    ConfigError
        The data folder or the config file does not exist.
    """
    data = Path(data).expanduser().resolve()
    if not data.is_dir():
        raise ConfigError(f"data folder {data} does not exist; pass --data with a real folder")
    if config is not None:
        config = Path(config).expanduser().resolve()
        if not config.is_file():
            raise ConfigError(
                f"config file {config} does not exist; pass --config with a real path"
            )
    path = Path(folder or Path.cwd()) / PROJECT_FILE
    body = {"data": str(data), "config": None if config is None else str(config)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# written by `retentio init`; commands run in this folder use these unless given\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    tmp.replace(path)
    return Project(data, config, path)
