"""Model backends per role, from a YAML or JSON file in AutoGen's component format.

```yaml
default:                       # every role not named below (optional; offline expert otherwise)
  provider: automodel.experts.OfflineExpertClient
roles:
  architect:
    provider: OpenAIChatCompletionClient
    config: {model: gpt-4o, api_key_env: OPENAI_API_KEY}
  analyst:
    provider: OpenAIChatCompletionClient
    config:
      model: qwen2.5
      base_url: http://127.0.0.1:8000/v1
      api_key_env: LOCAL_LLM_KEY       # optional; "none" is used when absent for local servers
      model_info: {vision: false, function_calling: false, json_output: false, family: unknown, structured_output: false}
      timeout: 120                     # seconds per HTTP request (the client's own limit)
      max_retries: 0                   # let AutoModel retry (with backoff and the error fed back)
      max_tokens: 1024                 # always cap replies: weak models ramble to the context limit
    price_per_1k_prompt: 0.0           # USD per 1000 tokens, for usage.json, the report and the cost cap
    price_per_1k_completion: 0.0
fallback_to_expert: true       # a role whose backend keeps failing is played by the offline expert for that turn
max_retries: 2                 # retries of a failed or unusable reply, before the fallback
backoff_s: 1.0                 # first wait before a retry; doubles each time; a server's Retry-After wins
request_timeout_s: 300         # AutoModel's own limit on one call, over the client's retries
ray:                           # --executor ray only (docs/ray.md); the run's settings override these
  address: auto                # the cluster this machine is a node of; or ray://HEAD:10001
  num_cpus: 1                  # per candidate
  num_gpus: 0.5                # per candidate; fractions share a GPU
```

Keys come from environment variables named by ``api_key_env``; a literal ``api_key`` in
the file is refused, so no secret is ever written into a run directory.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, Field

from automodel.messages import ROLE_NAMES
from automodel.retry import DEFAULT_RETRY

__all__ = ["BackendConfig", "ConfigError", "load_backend_config", "make_clients"]

SECRET_KEYS = {"api_key", "azure_ad_token", "token", "password", "secret"}
PRICE_KEYS = ("price_per_1k_prompt", "price_per_1k_completion")
SPEC_KEYS = {"provider", "config", "component_type", "version", "component_version", "description", "label", *PRICE_KEYS}
TOP_KEYS = {"default", "roles", "fallback_to_expert", "max_retries", "backoff_s", "request_timeout_s", "ray"}


class ConfigError(ValueError):
    """The backend configuration file is wrong; the message says where and what to do."""


class BackendConfig(BaseModel):
    """The parsed configuration (secrets never included)."""

    default: dict[str, Any] | None = None
    roles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fallback_to_expert: bool = DEFAULT_RETRY.fallback_to_expert
    max_retries: int = DEFAULT_RETRY.max_retries
    backoff_s: float = DEFAULT_RETRY.backoff_s
    request_timeout_s: float = DEFAULT_RETRY.request_timeout_s
    ray: dict[str, Any] = Field(default_factory=dict)
    """Options of the ``ray`` executor (``address``, ``num_cpus``, ``num_gpus``, ...; docs/ray.md)."""

    def spec(self, role: str) -> dict[str, Any] | None:
        """The backend spec that plays ``role`` (None: the offline expert)."""
        return self.roles.get(role) or self.default

    def prices(self, role: str) -> tuple[float, float]:
        """USD per 1000 prompt and completion tokens of ``role``'s backend (0 when not given)."""
        spec = self.spec(role) or {}
        return float(spec.get("price_per_1k_prompt") or 0.0), float(spec.get("price_per_1k_completion") or 0.0)

    def describe(self) -> dict[str, str]:
        """Role -> provider/model, for run.json and the report."""
        out = {}
        for role in ROLE_NAMES:
            spec = self.spec(role)
            if role == "executor":
                out[role] = "no model (runs the harness)"
            elif spec is None:
                out[role] = "offline expert"
            else:
                model = spec.get("config", {}).get("model")
                out[role] = f"{spec.get('provider')}" + (f" ({model})" if model else "")
        return out


def load_backend_config(path: str | Path | None) -> BackendConfig:
    """Read a backend config file; ``None`` means the offline expert for every role."""
    if path is None:
        return BackendConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'default' and/or 'roles'")
    extra = set(data) - TOP_KEYS
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {sorted(extra)}; valid keys: {sorted(TOP_KEYS)}")
    unknown = set(data.get("roles", {}) or {}) - set(ROLE_NAMES)
    if unknown:
        raise ConfigError(f"{path}: unknown role(s) {sorted(unknown)}; valid roles: {list(ROLE_NAMES)}")
    for where, spec in [("default", data.get("default")), *((f"roles.{k}", v) for k, v in (data.get("roles") or {}).items())]:
        if spec is None:
            continue
        if not isinstance(spec, dict) or "provider" not in spec:
            raise ConfigError(f"{path}: {where} needs a 'provider' (e.g. OpenAIChatCompletionClient) and a 'config'")
        unknown_keys = set(spec) - SPEC_KEYS
        if unknown_keys:
            raise ConfigError(f"{path}: {where} has unknown key(s) {sorted(unknown_keys)}; valid keys: {sorted(SPEC_KEYS)} "
                              "(client options such as model, base_url, timeout go under 'config')")
        for key in PRICE_KEYS:
            if key in spec and not isinstance(spec[key], int | float):
                raise ConfigError(f"{path}: {where}.{key} must be a number (USD per 1000 tokens), got {spec[key]!r}")
        found = SECRET_KEYS & set(spec.get("config") or {})
        if found:
            raise ConfigError(
                f"{path}: {where}.config has {sorted(found)}; put the key in an environment variable and name it "
                "with api_key_env instead, so it is never written to disk"
            )
    ray = data.get("ray") or {}
    if not isinstance(ray, dict):
        raise ConfigError(f"{path}: ray must be a mapping of executor options (address, num_cpus, num_gpus, ...)")
    try:
        from automodel.executors import ray_options

        ray_options(ray)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        # Only the keys the file sets override the defaults (automodel.retry.RetryPolicy).
        given = {k: data[k] for k in ("fallback_to_expert", "max_retries", "backoff_s", "request_timeout_s") if k in data}
        return BackendConfig.model_validate({"default": data.get("default"), "roles": data.get("roles") or {},
                                             "ray": ray, **given})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _client(spec: dict[str, Any], where: str) -> ChatCompletionClient:
    spec = {k: v for k, v in copy.deepcopy(spec).items() if k not in PRICE_KEYS}
    config = dict(spec.get("config") or {})
    key_env = config.pop("api_key_env", None)
    if key_env:
        key = os.environ.get(key_env)
        if key is None and not config.get("base_url"):
            raise ConfigError(f"{where}: environment variable {key_env} is not set; export it with the API key")
        config["api_key"] = key or "none"
    elif config.get("base_url") and "OpenAI" in str(spec.get("provider")):
        config["api_key"] = os.environ.get("OPENAI_API_KEY", "none")  # local servers take any key
    spec["config"] = config
    try:
        return ChatCompletionClient.load_component(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{where}: provider {spec.get('provider')} needs a package that is not installed ({exc.name}); "
                          f"pip install 'autogen-ext[{exc.name}]'") from exc
    except Exception as exc:
        raise ConfigError(f"{where}: cannot create the model client: {type(exc).__name__}: {exc}") from exc


def make_clients(config: BackendConfig) -> dict[str, ChatCompletionClient]:
    """A client for every role the config names (the offline expert plays the others)."""
    clients = {}
    for role in ROLE_NAMES:
        spec = config.spec(role)
        if spec is not None:
            clients[role] = _client(spec, f"roles.{role}" if role in config.roles else "default")
    return clients
