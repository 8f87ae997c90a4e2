"""What a server serves: its models (name, checkpoint, provider parameters, prompts) and its limits.

Models come from `--model NAME=PATH` arguments or a small YAML file; with neither, the embedded guard is
served as `default` with the shipped `configs/moderation` settings (a test keeps the two identical). Every
model's parameters go through the provider's own `parse_settings`, so a typo fails at start with the message
a guardrails config would get. Binding to anything but loopback needs an API key: the model reads user text.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ParameterError
from ..guard.prompts import SELF_CHECK_INPUT
from ..integrations.settings import ProviderSettings, parse_settings
from ..runtime.options import format_errors

API_KEY_ENV = "RWKV7_API_KEY"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MODEL_NAME = "default"
# The shipped configs/moderation entry: the embedded guard scoring Yes / No, blocking at P(Yes) >= 0.3.
MODERATION_PARAMETERS: dict[str, Any] = {
    "choices": ["Yes", "No"],
    "block_threshold": 0.3,
    "temperature": 0,
    "max_tokens": 3,
    "stop": ["\n"],
}
MODERATION_PROMPTS = {"self_check_input": SELF_CHECK_INPUT}


class ServedModel(BaseModel):
    """One served model. `prompts` (task name -> template) are pre-warmed at start, and those with a
    `{{ user_input }}` and no other per-request variable are the categories of `/v1/moderations`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    settings: ProviderSettings
    prompts: dict[str, str] = Field(default_factory=dict)

    @property
    def classifier(self) -> bool:
        return bool(self.settings.choices)


class ServerConfig(BaseModel):
    """The served models and the server's limits (see `rwkv7-provider serve --help` for each)."""

    model_config = ConfigDict(extra="forbid")

    models: list[ServedModel] = Field(min_length=1)
    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    api_key: str | None = None
    max_queue: int = Field(256, ge=1, description="requests admitted at once; more get 429 with Retry-After")
    request_timeout: float = Field(300.0, gt=0, description="seconds one request may take (504 after)")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body (413 above)")
    max_tokens_limit: int | None = Field(
        None, ge=1, description="server-wide cap on max_tokens, on top of each model's own max_tokens_limit"
    )
    max_n: int = Field(8, ge=1, description="largest `n` (completions per request)")

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ServedModel]) -> list[ServedModel]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, got {duplicates} more than once")
        return models

    @model_validator(mode="after")
    def _remote_needs_key(self) -> ServerConfig:
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"binding to {self.host!r} exposes the model beyond this machine: set an API key "
                f"(--api-key or the {API_KEY_ENV} environment variable), or bind to 127.0.0.1"
            )
        return self

    def model(self, name: str) -> ServedModel | None:
        return next((m for m in self.models if m.name == name), None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def served_model(name: str, model: str, parameters: dict[str, Any] | None = None,
                 prompts: dict[str, str] | str | None = None, base: Path | None = None) -> ServedModel:
    """A served model from its parts, checked with the provider's messages (`ParameterError`)."""
    if "model" in (parameters or {}):
        raise ParameterError(f"model {name!r}: give the checkpoint as `model:`, not under `parameters:`")
    settings = parse_settings({"model": model, **(parameters or {})})
    if isinstance(prompts, str):
        prompts = load_prompts(_resolve(prompts, base))
    return ServedModel(name=name, settings=settings, prompts=prompts or {})


def default_model() -> ServedModel:
    """The embedded guard with the shipped moderation config's settings and prompt."""
    return served_model(DEFAULT_MODEL_NAME, "default", MODERATION_PARAMETERS, MODERATION_PROMPTS)


def parse_model_argument(text: str) -> ServedModel:
    """`NAME=PATH` (PATH may be `default`, the embedded guard, served with the moderation settings)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ParameterError(f"--model expects NAME=PATH (e.g. guard=default or g1=/models/rwkv7-g1.pth), got {text!r}")
    if path == "default":
        return served_model(name, "default", MODERATION_PARAMETERS, MODERATION_PROMPTS)
    return served_model(name, path)


def load_prompts(path: Path) -> dict[str, str]:
    """Task -> template from a NeMo Guardrails prompts.yml (its `content:` prompts)."""
    data = _read_yaml(path)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list):
        raise ParameterError(f"{path}: expected a NeMo Guardrails prompts.yml with a `prompts:` list")
    return {p["task"]: p["content"] for p in prompts if isinstance(p, dict) and p.get("task") and p.get("content")}


def load_config(path: str | Path, **overrides: Any) -> ServerConfig:
    """A server config from YAML: `models:` (each `name`, `model`, optional `parameters` and `prompts`, a dict
    of task -> template or the path of a prompts.yml) and the limits of `ServerConfig`; relative paths are
    relative to the file. `overrides` (command-line values) win over the file."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ParameterError(f"{path}: expected a mapping with a `models:` list")
    models = []
    for i, entry in enumerate(data["models"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ParameterError(f"{path}: models[{i}] needs at least `name:` (and `model:`, default 'default')")
        unknown = sorted(set(entry) - {"name", "model", "parameters", "prompts"})
        if unknown:
            raise ParameterError(f"{path}: models[{i}] has unknown key(s) {unknown}; use name, model, parameters, prompts")
        model = str(entry.get("model", "default"))
        if model != "default" and not Path(model).expanduser().is_absolute():
            model = str(_resolve(model, path.parent))
        models.append(served_model(entry["name"], model, entry.get("parameters"), entry.get("prompts"), path.parent))
    settings = {k: v for k, v in data.items() if k != "models"} | {k: v for k, v in overrides.items() if v is not None}
    return build_config(models, **settings)


def build_config(models: list[ServedModel], **settings: Any) -> ServerConfig:
    """`ServerConfig` with errors as one `ParameterError`; the API key falls back to $RWKV7_API_KEY."""
    settings = {k: v for k, v in settings.items() if v is not None}
    settings.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
    try:
        return ServerConfig(models=models, **settings)
    except ValidationError as e:
        raise ParameterError(format_errors(e, "server settings")) from None


def _resolve(path: str, base: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ParameterError(f"{path}: not valid YAML ({e})") from None
