from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chatroom.web.config import ConfigError, Settings, read_config_file

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatroom.web.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd or REPO,
        check=False,
    )


def test_config_toml_lists_every_setting_with_default() -> None:
    document = tomllib.loads((REPO / "config.toml").read_text())
    in_file = {key: value for table in document.values() for key, value in table.items()}
    defaults = {item.name: getattr(Settings(), item.name) for item in dataclasses.fields(Settings)}

    assert sorted(in_file) == sorted(defaults)
    for name, default in defaults.items():
        assert in_file[name] == default, name


def test_unknown_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[room]\nbucket_sise = 100\n")

    with pytest.raises(ConfigError, match=r"unknown setting room\.bucket_sise"):
        read_config_file(path)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[room]\nbucket_size = "many"\n')

    with pytest.raises(ConfigError, match=r"room\.bucket_size must be an integer"):
        read_config_file(path)


def test_key_in_wrong_section_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nbucket_size = 100\n")

    with pytest.raises(ConfigError, match=r"unknown setting server\.bucket_size"):
        read_config_file(path)


def test_precedence_cli_env_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nport = 1111\nhost = "::1"\n[room]\nmax_replay = 7\n')

    settings = Settings.load(
        path, {"CHATROOM_PORT": "2222", "CHATROOM_MAX_REPLAY": "9"}, {"port": 3333}
    )

    assert settings.port == 3333
    assert settings.max_replay == 9
    assert settings.host == "::1"
    assert settings.bucket_size == 100


def test_environment_wrong_type_names_variable() -> None:
    with pytest.raises(ConfigError, match="CHATROOM_PORT must be an integer"):
        Settings.load(None, {"CHATROOM_PORT": "eighty"}, {})


def test_out_of_range_port_rejected() -> None:
    with pytest.raises(ConfigError, match="port must be between 0 and 65535"):
        Settings.load(None, {}, {"port": 70000})


def test_serve_without_password_exits_2(tmp_path: Path) -> None:
    completed = run_cli("serve", "--port", "0", cwd=tmp_path)

    assert completed.returncode == 2
    assert "password is required" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_serve_invalid_port_exits_2(tmp_path: Path) -> None:
    completed = run_cli("serve", "--port", "70000", env={"CHATROOM_PASSWORD": "x"}, cwd=tmp_path)

    assert completed.returncode == 2
    assert "port must be between 0 and 65535" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_serve_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[room]\nnope = 1\n")

    completed = run_cli(
        "serve", "--config", str(tmp_path / "bad.toml"), env={"CHATROOM_PASSWORD": "x"}
    )

    assert completed.returncode == 2
    assert "unknown setting room.nope" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_serve_empty_password_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("\n")

    completed = run_cli("serve", "--password-file", str(tmp_path / "password"), cwd=tmp_path)

    assert completed.returncode == 2
    assert "is empty" in completed.stderr


def test_help_describes_options_with_units() -> None:
    completed = run_cli("serve", "--help")

    assert completed.returncode == 0
    for option in ("--port", "--host", "--password-file", "--config", "--log-level"):
        assert option in completed.stdout
    assert "0 picks a free port" in completed.stdout


def test_version_option() -> None:
    completed = run_cli("--version")

    assert completed.returncode == 0
    assert completed.stdout.startswith("chatroom ")
