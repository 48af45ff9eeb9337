"""ladder's one settings object, read from the environment (prefix LADDER_)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).with_name("configurations.yaml")
DIGEST_PREFIX = "sha256:"


def key_digest(key: str) -> str:
    """The hex SHA-256 of a key: what ladder keeps and compares instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def digest_setting(value: str) -> str:
    """A LADDER_API_KEYS value with every plain key replaced by `sha256:<hex>`; ValueError when
    a digest is malformed."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    digests = []
    for entry in entries:
        if entry.startswith(DIGEST_PREFIX):
            hexdigest = entry.removeprefix(DIGEST_PREFIX).lower()
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                raise ValueError("a sha256: entry needs 64 hex digits")
            digests.append(DIGEST_PREFIX + hexdigest)
        else:
            digests.append(DIGEST_PREFIX + key_digest(entry))
    return ",".join(digests)


class Settings(BaseSettings):
    """Every setting of ladder, with its default."""

    # hide_input_in_errors: a refused value (an API key, the admin token) never reaches a log.
    # An empty variable counts as unset (compose's `${X:-}` passes one through).
    model_config = SettingsConfigDict(
        env_prefix="LADDER_",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    data_dir: Path = Field(
        Path(".ladder"), description="Holds the embedded Chroma database and model caches."
    )
    chroma_url: str | None = Field(
        None, description="A Chroma server (http://host:port); embedded Chroma when unset."
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="Torch threads for embedding and local generation."
    )
    # ingest.embedder.EmbedBackend, spelled out: the settings are a leaf (mypy checks they agree).
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx",
        description="Runs the embedder: torch, onnx (ONNX Runtime fp32) or onnx-int8"
        " (dynamic int8); the ONNX exports are built once under the cache dir.",
    )
    embeddings_url: str | None = Field(
        None,
        description="An OpenAI-compatible embeddings server (http://host:port; ladder posts to"
        " /v1/embeddings) that embeds for ingestion and queries; the local embedder when unset.",
    )
    embeddings_model: str | None = Field(
        None,
        min_length=1,
        description="The model the embeddings server is asked for; collections record it and"
        " refuse another. Unset: the bundled model's name, which reads indexes built locally.",
    )
    embeddings_api_key: str | None = Field(
        None, description="Bearer token sent to the embeddings server; none when unset."
    )
    embeddings_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Longest wait for one embeddings request (a query's worker thread is held"
        " that long when the server hangs).",
    )
    embeddings_batch_size: int = Field(
        32, ge=1, le=4096, description="Texts per embeddings request (TEI's default cap is 32)."
    )
    embeddings_retries: int = Field(
        2, ge=0, le=10, description="Retries of an embeddings request refused or not connected."
    )
    embeddings_max_tokens: int = Field(
        256,
        ge=8,
        le=32_768,
        description="The embeddings model's window: longer texts are cut (by the chunking"
        " tokenizer, two tokens kept for special ones) before they are sent.",
    )
    embeddings_tokenizer: Path | None = Field(
        None,
        description="A folder with the remote model's tokenizer.json, for chunk sizes and"
        " cutting; the bundled model's tokenizer when unset.",
    )
    chunk_size: int = Field(200, ge=32, le=2048, description="Chunk size in embedder tokens.")
    chunk_overlap: int = Field(30, ge=0, le=512, description="Chunk overlap in embedder tokens.")
    max_file_bytes: int = Field(
        20_000_000, ge=1, description="Files larger than this are skipped by ingestion."
    )
    max_pdf_pages: int = Field(
        2_000, ge=1, description="PDFs with more pages than this are skipped by ingestion."
    )
    max_pdf_chars: int = Field(
        5_000_000,
        ge=1,
        description="A PDF is skipped once its extracted text passes this many characters"
        " (compressed pages can hold far more text than the file's bytes).",
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Chunks per embedder batch.")
    ingest_flush_chunks: int = Field(
        2048, ge=1, description="Chunks gathered per embed call before documents are written."
    )
    ingest_read_ahead: int = Field(
        2, ge=1, le=64, description="Flushes read and chunked ahead of the embedder."
    )
    ingest_write_behind: int = Field(
        2, ge=1, le=64, description="Embedded flushes waiting for their writes to Chroma."
    )

    cache_dir_override: Path | None = Field(
        None, alias="LADDER_CACHE_DIR", description="Converted models; default DATA_DIR/cache."
    )
    base_model: str | None = Field(
        None,
        description="The base model: a model folder, a .gguf file or a hub id (offline: only one"
        " already in the local Hugging Face cache); the bundled SmolLM2-135M-Instruct when unset.",
    )
    config: Path = Field(DEFAULT_CONFIG, description="The configurations YAML file.")
    adapters_dir: Path | None = Field(None, description="LoRA registry; default DATA_DIR/adapters.")
    max_lora_rank: int = Field(64, ge=1, le=512, description="Largest LoRA rank accepted.")
    engine: Literal["local", "vllm"] = Field("local", description="Who generates.")
    host: str = Field("127.0.0.1", description="Address `ladder serve` binds.")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Server processes (vllm engine only).")

    vllm_url: str = Field("http://127.0.0.1:8001", description="The vLLM server.")
    vllm_urls: str | None = Field(None, description="vLLM replicas, comma-separated.")
    vllm_routing: Literal["affinity", "round_robin", "least_busy"] = "affinity"
    vllm_replica_cooldown_s: float = Field(5.0, gt=0, description="A failed replica's rest.")
    vllm_affinity_spill: int = Field(4, ge=0, description="Queue over the least busy replica.")
    vllm_health_timeout_s: float = Field(2.0, gt=0, description="A replica's /health probe.")
    vllm_model: str = Field("base", description="The base model's served name on vLLM.")
    vllm_connect_timeout_s: float = Field(3.0, gt=0)
    vllm_read_timeout_s: float = Field(120.0, gt=0)
    vllm_port: int = Field(8001, ge=1, le=65535, description="Port `ladder vllm up` binds.")
    vllm_venv: Path | None = Field(None, description="vLLM's own venv; default <repo>/.venv-vllm.")
    vllm_start_timeout_s: float = Field(300.0, gt=0, description="Wait for vLLM's /health.")
    vllm_stop_timeout_s: float = Field(20.0, gt=0, description="SIGTERM grace before SIGKILL.")
    vllm_max_loras: int = Field(4, ge=1, le=64, description="vLLM: adapters in one batch.")
    vllm_kvcache_gb: int = Field(1, ge=1, le=256, description="vLLM CPU KV cache, GiB.")
    vllm_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="vLLM weights; float32 keeps greedy answers batch-invariant on CPU."
    )
    vllm_leak_guard: bool = Field(
        True, description="Send base requests through a zero adapter (vLLM CPU LoRA defect)."
    )
    vllm_tool_call_parser: str | None = Field(
        "pythonic",
        description="vLLM's --tool-call-parser, started with --enable-auto-tool-choice: vLLM 0.32"
        " refuses every tool_choice but none without both; pythonic needs no special tokens.",
    )
    vllm_auto_tool_choice: bool = Field(
        False,
        description="Whether ladder forwards tool_choice auto (the default with tools); off, it is"
        " refused: a chat template without tools (SmolLM2's) never shows the model the functions.",
    )

    max_queue: int = Field(8, ge=1, le=1024, description="Local engine: requests waiting at most.")
    output_cache: int = Field(
        64, ge=1, le=4096, description="Local engine: compiled output constraints kept (LRU)."
    )
    context_window: int | None = Field(
        None,
        ge=256,
        description="Prompt plus completion tokens at most; the base model's own window when"
        " unset, and never more than it.",
    )
    max_tokens_ceiling: int = Field(1024, ge=1, description="Largest max_tokens a request may ask.")
    max_n: int = Field(8, ge=1, le=128, description="Choices (`n`) a request may ask for.")
    max_messages: int = Field(64, ge=1, description="Messages a request may carry.")
    max_message_chars: int = Field(32_000, ge=1, description="Characters in one message.")
    max_total_chars: int = Field(100_000, ge=1, description="Characters in all messages.")
    max_model_chars: int = Field(
        256, ge=1, description="Characters in a request's `model`; 400 beyond, before any lookup."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Request body size.")
    debug_prompts: bool = Field(
        False, description="Let a request see its final prompt with the x-ladder-debug header."
    )
    api_keys: str | None = Field(
        None,
        description="Keys of /v1 (comma-separated; plain or sha256:<hex>); kept only as digests;"
        " /v1 is open when unset; a value with no keys in it stops start-up.",
    )
    allow_open: bool = Field(
        False,
        description="Let `ladder serve` serve /v1 without API keys on a non-loopback address"
        " (logged as a warning); without it that is a start-up error.",
    )
    auth_failures_per_minute: int = Field(
        10,
        ge=1,
        description="Failed API-key or admin-token attempts per client address per minute (per"
        " process); beyond, the address gets 429 before its key is looked at.",
    )
    trusted_proxies: str | None = Field(
        None,
        description="Addresses or networks (comma-separated) of reverse proxies whose"
        " X-Forwarded-For and X-Forwarded-Proto are believed; no one's when unset.",
    )
    max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        description="Request line and headers, bytes; the server refuses a larger head before"
        " reading it all.",
    )
    max_headers: int = Field(
        100, ge=8, le=10_000, description="Headers a request may carry; 431 beyond."
    )
    allowed_hosts: str | None = Field(
        None,
        description="Host header values served (comma-separated, `*.example.com` allowed;"
        " loopback names always); any when unset.",
    )
    rate_limit_rpm: int | None = Field(
        None, ge=1, description="Requests per minute per key (or per address when keys are off)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for rate-limit state every replica shares (redis://host:6379/0);"
        " in process when unset.",
    )
    redis_timeout_s: float = Field(
        0.5, gt=0, le=30, description="Longest wait for Redis; then the request is admitted."
    )
    max_streams_per_key: int | None = Field(
        None, ge=1, description="Concurrent streams per key (or address); 429 beyond."
    )
    retrieval_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for the index; then the configuration's on_error."
    )
    query_embed_cache: int = Field(
        1024, ge=0, le=1_000_000, description="Query vectors kept per process (LRU); 0 keeps none."
    )
    query_embed_batch: int = Field(
        8,
        ge=1,
        le=256,
        description="Most concurrent query embeddings gathered into one call of the local"
        " embedder (no waiting: queries that arrive while one embeds go in the next call); 1"
        " embeds each alone. Not used with LADDER_EMBEDDINGS_URL (the server batches) or"
        " onnx-int8 (whose vectors move with their batch-mates).",
    )
    token_count_cache: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="Token counts of prompt parts (system prompt, few-shot turns, sources) kept per"
        " process (LRU), so trimming composes counts instead of tokenising whole prompts; 0 keeps"
        " none.",
    )
    db_busy_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for a locked or unreachable experiments database."
    )

    db_url: str | None = Field(
        None, description="Experiments database (SQLAlchemy URL); SQLite under DATA_DIR if unset."
    )
    admin_token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token of /admin and /dashboard (surrounding spaces stripped; no"
        " spaces or control characters inside); off when unset.",
    )
    dashboard_session_s: int = Field(
        28_800, ge=60, le=604_800, description="Lifetime of a dashboard login, seconds."
    )
    dashboard_audit_entries: int = Field(
        20, ge=1, le=1000, description="Latest audit entries the dashboard shows per experiment."
    )
    metrics_token: str | None = Field(
        None, min_length=16, description="Bearer token of /metrics; /metrics is open when unset."
    )
    prices: dict[str, tuple[float, float]] | None = Field(
        None,
        description="USD per million input/output tokens: by configuration name, else base or"
        " adapter (fine-tuned); unset: the hosted prices of evaluation/prices.yaml.",
    )
    access_log: bool = Field(False, description="Log every request line (costs CPU per request).")
    experiment_refresh_s: float = Field(
        1.0, gt=0, le=60, description="How often replicas poll for experiment changes."
    )
    experiment_min_samples: int = Field(
        100, ge=1, description="Users with feedback per arm before a comparison may name a winner."
    )
    guardrail_check_every: int = Field(
        20, ge=1, le=100_000, description="Outcomes (of this replica) between guardrail checks."
    )
    guardrail_check_interval_s: float = Field(
        1.0, ge=0, le=3600, description="Least time between guardrail checks (of a replica)."
    )
    guardrail_alpha: float = Field(
        0.05, gt=0, le=0.5, description="Chance a guardrail ever pauses an arm within limits."
    )
    guardrail_min_users: int = Field(20, ge=2, description="Users per arm before guardrails.")
    experiment_key_unit: bool = Field(
        False,
        description="Make the caller's API key the experiment unit of a request that names no"
        " user (no `user`, no X-Ladder-User): every request of one key sticks to one arm.",
    )
    experiment_export_rows: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Exposures read per database round trip by the exposure export.",
    )

    @field_validator("chroma_url", "embeddings_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None

    @field_validator("vllm_urls")
    @classmethod
    def _urls_are_http(cls, value: str | None) -> str | None:
        urls = [url.strip() for url in (value or "").split(",") if url.strip()]
        if (value is not None and not urls) or any(not u.startswith("http") for u in urls):
            raise ValueError("must list http:// or https:// URLs (unset: LADDER_VLLM_URL)")
        return ",".join(urls) or None

    @field_validator("embeddings_tokenizer")
    @classmethod
    def _tokenizer_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "tokenizer.json").is_file():
            raise ValueError(f"{value} holds no tokenizer.json")
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_as_digests(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digests = digest_setting(value)
        if not digests:
            raise ValueError("names no key (unset it to serve /v1 without keys)")
        return digests

    @field_validator("admin_token", mode="before")
    @classmethod
    def _token_stripped(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if any(c.isspace() or not c.isprintable() for c in value):
                raise ValueError("must not contain spaces or control characters")
        return value

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @property
    def experiments_db_url(self) -> str:
        """The experiments database: LADDER_DB_URL, else SQLite under the data dir."""
        return self.db_url or f"sqlite:///{(self.data_dir / 'ladder.db').resolve()}"

    @property
    def vllm_replica_urls(self) -> list[str]:
        """The vLLM replicas: LADDER_VLLM_URLS, else the one LADDER_VLLM_URL."""
        return self.vllm_urls.split(",") if self.vllm_urls else [self.vllm_url]

    @property
    def adapters_root(self) -> Path:
        """The LoRA registry's folder."""
        return self.adapters_dir or self.data_dir / "adapters"

    @property
    def chroma_dir(self) -> Path:
        """The embedded Chroma database's folder."""
        return self.data_dir / "chroma"

    @property
    def cache_dir(self) -> Path:
        """Converted models and other rebuildable caches."""
        return self.cache_dir_override or self.data_dir / "cache"
