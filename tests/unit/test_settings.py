"""The settings object and its reference, .env.example."""
from __future__ import annotations

import re

import pytest

from clip_embedder.config import Settings
from tests.helpers import ROOT


def example_vars() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_every_setting_is_documented_once():
    documented = example_vars()
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - set(documented) == set(), "settings missing from .env.example"
    lines = [line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
             and not line.startswith("#")]
    assert len(lines) == len(set(lines)), "a variable is listed twice"


def test_env_example_gives_the_defaults(monkeypatch):
    for k in example_vars():
        monkeypatch.delenv(k, raising=False)
    from_file = Settings(_env_file=ROOT / ".env.example")
    defaults = Settings(_env_file=None)
    assert from_file == defaults  # empty values mean "the default", e.g. TEXT_MODEL= → bundled MiniLM


def test_spaces_are_validated(monkeypatch):
    monkeypatch.setenv("SPACES", "clip, text")
    assert Settings(_env_file=None).spaces == ["clip", "text"]
    with pytest.raises(ValueError, match="unknown embedding space"):
        Settings(_env_file=None, spaces="clip,siglip")


def test_api_keys_never_print(monkeypatch):
    monkeypatch.setenv("API_KEYS", "alpha-secret, beta-secret")
    s = Settings(_env_file=None)
    assert [k.get_secret_value() for k in s.api_keys] == ["alpha-secret", "beta-secret"]
    assert "secret" not in repr(s) and "secret" not in str(s.model_dump())
