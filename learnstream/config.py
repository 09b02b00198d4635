"""Settings: one typed object, read from a TOML file and the environment.

Precedence (last wins): defaults < TOML file (--config or LEARNSTREAM_CONFIG) < environment.
TOML keys are the field names below (e.g. ``chat_threshold = 50``). Environment names are
LEARNSTREAM_<FIELD> plus the names the seed apps already use (AUTO_TRAIN, TRAIN_THRESHOLD,
USE_LOCAL_AI, KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from learnstream.secret import Secret

FAMILIES = ("chat", "image")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    # All local state: store.sqlite, registry/, trainer/, broker/ (LEARNSTREAM_DATA_DIR).
    data_dir: Path = Path(".learnstream")
    # An existing cluster ("host:port,..."); None means the project's own local broker.
    bootstrap_servers: str | None = None
    # Prepended to every topic name as given (e.g. "prod."), so deployments can share a cluster.
    topic_prefix: str = ""
    # Partitions for topics that `up` creates; consumers in one group share them.
    partitions: int = 3
    # Replicas per topic that `up` creates; None: min(3, brokers in the cluster). Topics get min.insync.replicas
    # = replicas - 1 (at least 1), so acks=all writes go on with one broker down and never rest on one copy alone.
    replication_factor: int | None = None
    # Raw topics hold PII: keep them briefly. The *.anon topics are the dataset of record (-1 = forever).
    raw_retention_ms: int = 24 * 3600 * 1000
    anon_retention_ms: int = -1
    # HMAC key for pseudonyms and placeholders. Required unless dev is on.
    pseudonym_key: Secret | None = None
    # Demo/test mode: allows running without a pseudonym key and opens clinician/admin endpoints.
    dev: bool = False
    # Events larger than this go to the DLQ (which keeps their first 4 KiB, length and sha256).
    max_event_bytes: int = 512 * 1024
    # Train automatically when a family crosses its threshold of new stored samples.
    auto_train: bool = True
    chat_threshold: int = 100
    image_threshold: int = 100
    # A Hugging Face causal-LM folder or id for chat version 0; None builds the small embedded GPT-2.
    base_model: str | None = None
    # spaCy NER model: a package name or a path; "" disables name removal (loudly).
    ner_model: str = "en_core_web_sm"
    # Image embedding dimension; None decides it from the first image events that become samples and records it
    # in <data_dir>/embedding_dim.json for every anonymizer (learnstream/embedding_dim.py).
    embedding_dim: int | None = None
    # Registry versions kept per family (the served one is always kept too).
    keep_versions: int = 3
    # Owners' data keys a process keeps in memory (least recently used go first; the key store file has them all).
    key_cache_size: int = 100_000
    # Chat training recipe; unset takes trainer.chat_training.ChatHParams' defaults, the recipe bench/train.py
    # measures. The learning rate defaults by base: high for the small embedded GPT-2, low for a pretrained one.
    chat_epochs: int | None = None  # passes over the new samples
    chat_learning_rate: float | None = None  # peak LR after the re-warm-up
    chat_batch_size: int | None = None
    chat_replay_share: float | None = None  # share of each epoch's conversations replayed from older samples
    # Promotion gate: a new version is served unless it is worse than the served one on held-out data by more
    # than this fraction (chat: loss; image: tag F1).
    promotion_tolerance: float = 0.02
    # A run with no held-out score of its own (too little data to hold any out, nothing to train on) is recorded
    # but not served, unless this is on: then it is promoted and its reason says it was promoted without one.
    promote_without_eval: bool = False
    # After an erasure removed samples a model may have trained on, the trainer retrains that family from scratch
    # (from version 0, on the store without them), whatever the threshold or auto_train; serving keeps its version
    # until the new one is promoted. Off: the operator runs `learnstream train --from-scratch` when they choose.
    retrain_after_erasure: bool = True
    # Serving: the interface and port it listens on. 127.0.0.1 by default; "0.0.0.0" opens it to the network.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Requests served at once; more get 429 with Retry-After (health checks and /metrics do not count).
    http_max_concurrent: int = 64
    # /metrics of a process without the serving role (serving exports on http_port); None: not served.
    metrics_port: int | None = None
    # USE_LOCAL_AI=1 answers with the local model, 0 with the remote API. Unset: the remote when one is
    # configured (the seed app's default, Groq), else the local model.
    use_local_ai: bool | None = None
    # "local", "remote" or "hybrid" (local for routine messages, remote for complex or unsure ones);
    # None follows USE_LOCAL_AI. Fallback to the other backend on error or timeout either way.
    chat_mode: str | None = None
    # A/B test: the treatment arm's mode and the share of users in it (0 = no test).
    ab_mode: str | None = None
    ab_share: float = 0.0
    # An OpenAI-compatible chat-completions API (Groq, say); unset = no remote backend.
    remote_url: str | None = None
    remote_api_key: Secret | None = None
    remote_model: str = "llama-3.1-8b-instant"
    remote_timeout_s: float = 20.0
    # Crisis safety: a flagged session stays on the safety path this long after its last flag, unless a
    # clinician clears it (POST /api/safety/clear).
    safety_sticky_minutes: float = 60.0
    # A second opinion, when a remote API is configured (serving/second_opinion.py): a message the classifier
    # scores from safety_second_opinion_min_score (None: its check-in threshold) up to its crisis threshold is
    # asked of the remote, anonymized, waiting at most safety_second_opinion_timeout_s; a CRISIS answer escalates
    # the turn to a crisis flag (layer "remote"); no answer, a timeout or an error changes nothing.
    safety_second_opinion: bool = True
    safety_second_opinion_timeout_s: float = 3.0
    safety_second_opinion_min_score: float | None = None
    # Reply generation of the local chat model (see serving/generation.py).
    chat_max_new_tokens: int = 64
    chat_do_sample: bool = True
    chat_temperature: float = 0.8
    chat_top_p: float = 0.9
    chat_top_k: int = 50
    chat_repetition_penalty: float = 1.3
    # Serve the local chat model with torch's dynamic int8 quantisation of its linear layers (CPU only; see
    # serving/chat_model.py). bench/chat.py --int8 measures its speed and held-out loss against fp32 on this
    # machine: turn it on where that says it is faster and the loss change is acceptable.
    chat_int8: bool = False
    # Bearer tokens by role: "clinician:tok1,app:tok2,admin:tok3". Empty: app endpoints open, others 403.
    api_tokens: Secret = Secret("")
    # Kafka client security, passed through to every client (PLAINTEXT, SSL, SASL_SSL, SASL_PLAINTEXT).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    # Logs as JSON lines instead of text.
    json_logs: bool = False

    def __post_init__(self) -> None:
        # The secret fields (typed Secret above) also take plain strings, and keep them wrapped: repr, logs and
        # errors never show them (learnstream/secret.py).
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Secret(value))

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.sqlite"

    @property
    def embedding_dim_path(self) -> Path:
        return self.data_dir / "embedding_dim.json"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def threshold(self, family: str) -> int:
        return {"chat": self.chat_threshold, "image": self.image_threshold}[family]

    def key_bytes(self) -> bytes:
        """The pseudonym key; callers decide what to do when there is none (see require_key)."""
        if self.pseudonym_key:
            return self.pseudonym_key.reveal().encode()
        if self.dev:
            # A fixed, public dev key: pseudonyms stay stable across demo runs and say loudly they are not secret.
            return b"learnstream-dev-key-not-secret"
        raise ConfigError(
            "no pseudonym key: set LEARNSTREAM_PSEUDONYM_KEY (or pseudonym_key in the config file); "
            "LEARNSTREAM_DEV=1 runs with a public development key"
        )


SECRET_FIELDS = ("pseudonym_key", "remote_api_key", "api_tokens", "sasl_password")

# Environment names that differ from LEARNSTREAM_<FIELD>.
_ENV_ALIASES = {
    "bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS",),
    "auto_train": ("AUTO_TRAIN", "LEARNSTREAM_AUTO_TRAIN"),
    "chat_threshold": ("TRAIN_THRESHOLD", "LEARNSTREAM_CHAT_THRESHOLD"),
    "image_threshold": ("TRAIN_THRESHOLD", "LEARNSTREAM_IMAGE_THRESHOLD"),
    "use_local_ai": ("USE_LOCAL_AI", "LEARNSTREAM_USE_LOCAL_AI"),
}


def _parse(name: str, kind: str, raw: object) -> object:
    """Convert a TOML or environment value to the field's type (annotations are strings here)."""
    text = str(raw).strip()
    optional, kind = kind.endswith(" | None"), kind.removesuffix(" | None")
    if optional and text == "":
        return None
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(text)
        if kind == "Secret":
            return Secret(str(raw))
    except ValueError:
        raise ConfigError(f"setting {name}: cannot read {text!r} as {kind}") from None
    return text


def load_settings(config_file: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from defaults, the TOML file, the environment, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    kinds = {f.name: f.type for f in fields(Settings)}
    path = config_file or env.get("LEARNSTREAM_CONFIG")
    if path:
        try:
            table = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in table.items():
            if key not in kinds:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _parse(key, kinds[key], raw)
    for name, kind in kinds.items():
        # Specific names win over generic ones: LEARNSTREAM_CHAT_THRESHOLD over TRAIN_THRESHOLD.
        for env_name in (*_ENV_ALIASES.get(name, ()), f"LEARNSTREAM_{name.upper()}"):
            if env_name in env:
                values[name] = _parse(env_name, kind, env[env_name])
    values.update(overrides)
    settings = Settings(**values)
    if settings.partitions < 1:
        raise ConfigError("setting partitions: must be at least 1")
    for name in ("chat_threshold", "image_threshold", "http_max_concurrent", "key_cache_size"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"setting {name}: must be at least 1")
    if settings.safety_second_opinion_timeout_s <= 0:
        raise ConfigError("setting safety_second_opinion_timeout_s: must be more than 0")
    floor = settings.safety_second_opinion_min_score
    if floor is not None and not 0.0 <= floor <= 1.0:
        raise ConfigError("setting safety_second_opinion_min_score: must be a score, 0 to 1")
    for name in ("http_port", "metrics_port"):
        port = getattr(settings, name)
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"setting {name}: must be a TCP port, 0 to 65535")
    return settings


__all__ = ["FAMILIES", "SECRET_FIELDS", "ConfigError", "Settings", "load_settings"]
