"""make_provider: names, settings validation, and which SDKs get imported."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from itas.agents.providers import PROVIDERS, make_provider
from itas.errors import ConfigError


def test_unknown_provider_and_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ITAS_CACHE", "off")
    with pytest.raises(ConfigError, match="unknown provider 'mistral'; known providers: anthropic"):
        make_provider("mistral", {})
    with pytest.raises(ConfigError, match="settings must be a mapping"):
        make_provider("openai", ["base_url"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'api_key' is not allowed"):
        make_provider("openai", {"api_key": "sk-in-a-pool-file"})
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) 'temprature'"):
        make_provider("anthropic", {"temprature": 0.5, "base_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="'cache' must be true or false, got 'no'"):
        make_provider("sim", {"cache": "no"})
    with pytest.raises(ConfigError, match="'max_concurrency' must be in"):
        make_provider("openai", {"max_concurrency": 0})
    with pytest.raises(ConfigError, match="'timeout_s' must be a number"):
        make_provider("local", {"timeout_s": "fast"})
    assert set(PROVIDERS) == {"openai", "anthropic", "gemini", "bedrock", "local", "sim"}


def test_simulated_models_do_not_import_vendor_sdks() -> None:
    code = (
        "import sys; from itas.agents.providers import make_provider;"
        "make_provider('sim', {'skill': 0.7});"
        "print(sorted(m for m in ('openai', 'anthropic', 'google.genai', 'boto3', 'botocore')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_provider_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITAS_CACHE", "off")
    monkeypatch.delenv("ITAS_LOCAL_MODEL_URL", raising=False)
    local = make_provider("local", {})
    assert local.base_url == "http://127.0.0.1:8765/v1/"  # type: ignore[attr-defined]
    assert local.timeout_s == 600.0  # type: ignore[attr-defined]  # the server queues requests
    monkeypatch.setenv("ITAS_LOCAL_MODEL_URL", "http://127.0.0.1:9999/v1")
    assert make_provider("local", {}).base_url == "http://127.0.0.1:9999/v1/"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "sdk", "extra"), [("gemini", "google", "gemini"),
                                                     ("bedrock", "boto3", "bedrock")])
def test_a_missing_optional_sdk_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, name: str, sdk: str, extra: str
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == sdk else real_find_spec(n, *a)
    )
    with pytest.raises(ConfigError, match=rf"needs its SDK .*pip install 'itas\[{extra}\]'"):
        make_provider(name, {})
