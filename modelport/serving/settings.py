"""Server settings (flags and ``MODELPORT_*`` env) and per-model ``config.yaml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelport.errors import InvalidArgumentError
from modelport.processing.config import expand_handler
from modelport.processing.spec import ProcessingSpec
from modelport.runtimes.base import OnnxArena, RemoteTarget
from modelport.serving.pipeline_spec import PipelineSpec
from modelport.storage import CONFIG_FILE, is_url

__all__ = [
    "CONFIG_FILE",
    "REMOTE_RUNTIMES",
    "ModelConfig",
    "RemoteConfig",
    "ServerSettings",
    "VersionPolicy",
    "read_model_config",
]

REMOTE_RUNTIMES = ("torchserve", "tfserving")


class ServerSettings(BaseSettings):
    """Everything ``modelport serve`` can be told; every field is also ``MODELPORT_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", frozen=True, extra="forbid")

    repository: Path | str = Field(
        description="model repository: a folder, or a store URL (s3://bucket/prefix, gs://, az://, file://)"
    )
    cache_dir: str = Field(
        "",
        description="where versions from an object store are fetched (default ~/.cache/modelport, else the temp dir)",
    )
    host: str = Field("127.0.0.1", description="address to bind")
    server_name: str = Field(
        "triton",
        min_length=1,
        description="the name KServe v2 server metadata answers (GET /v2, gRPC ServerMetadata): Triton's by default, "
        "which Triton's clients and examples check for",
    )
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 = any free port)")
    grpc_port: int = Field(8001, ge=-1, le=65535, description="gRPC port (0 = any free port, -1 = no gRPC)")
    tfserving_grpc: bool = Field(False, description="also serve TF Serving's gRPC API (imports TensorFlow)")
    workers: int = Field(1, ge=1, le=64, description="server processes sharing the ports (SO_REUSEPORT)")
    device: str = Field("cpu", description="default device: cpu or cuda[:N]")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description=(
            "threads per runtime (0: the CPUs the process may use if fewer than the host's, else framework's; "
            "TFLite: LiteRT's one thread)"
        ),
    )
    instances: int = Field(1, ge=1, description="default runtime instances per model version")
    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="ONNX Runtime execution providers, in order"
    )
    onnx_arena: OnnxArena = Field(
        "session",
        description="ONNX Runtime's CPU memory arena: session (onnxruntime's own, one per session), shared (one "
        "for the process, a batch's tensors packed in one 256 MiB region: less memory under batching for models "
        "with large activations, 8 MB more at idle) or none",
    )
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="default longest wait to fill a batch (0 = greedy: run what is queued at once)"
    )
    max_queue_size: int = Field(512, ge=1, description="default bound of each model's request queue")
    inline_below_ms: float | None = Field(
        None,
        ge=0,
        description="batches averaging less compute run on the event loop, not a thread (0 = never; default: "
        "0.2 ms, or 2 ms when the process may use one CPU only, where a thread cannot run beside the loop)",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="default per-request timeout")
    processing_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="threads decoding payloads (images, text) off the event loop (0 = CPUs - 1, at most 8)",
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest accepted request body")
    service_envelope: Literal["", "body", "json", "kserve", "kservev2"] = Field(
        "",
        description="TorchServe's service_envelope: every TorchServe handler inside that envelope of "
        'ts.torch_handler.request_envelope (json: {"instances": [...]} in, {"predictions": [...]} out)',
    )
    decode_input_request: bool = Field(
        True,
        description="TorchServe's decode_input_request: a handler gets application/json inputs parsed and text/* "
        "as str (false: every input as bytes)",
    )
    max_response_bytes: int = Field(
        0,
        ge=0,
        description="largest response a TorchServe handler may answer one request with (TorchServe's "
        "max_response_size; over it the batch fails, 500 Worker died., as in TorchServe; 0 = no limit)",
    )
    poll_interval_s: float = Field(0.0, ge=0, description="repository polling for hot reload (0 = off)")
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: how long in-flight requests may finish")
    model_control: bool = Field(
        False, description="enable the load/unload repository API and TorchServe's register/scale/unregister API"
    )
    model_store: str = Field(
        "", description="where TorchServe's POST /models?url=NAME.mar looks for archives (default: the repository)"
    )
    golden_check: bool = Field(True, description="run each version's golden vectors when it loads")
    shared_memory: bool = Field(
        True, description="Triton's system shared memory extension, for clients on the server's host only"
    )
    log_json: bool = Field(False, description="structured JSON logs")
    tracing: bool | None = Field(
        None,
        description="OpenTelemetry traces, exported as the OTEL_* variables say (unset: on when OTEL_TRACES_EXPORTER "
        "or OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT is set; --no-tracing: off whatever they say; off with "
        "OTEL_SDK_DISABLED=true)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    reuse_port: bool = Field(False, description="bind with SO_REUSEPORT (set for each --workers process)")
    http_fast_path: bool = Field(
        True,
        description="answer simple inference requests straight from the HTTP protocol, without the ASGI cycle "
        "(false: every request through ASGI)",
    )
    port_file: str = Field(
        "", description='write {"http": PORT, "grpc": PORT|null, "pid": PID} here once both ports are bound'
    )
    api_key: str = Field("", repr=False, description="token for inference and metadata (empty = no authentication)")
    api_key_file: str = Field("", description="read --api-key from this file (e.g. a mounted Kubernetes secret)")
    control_key: str = Field("", repr=False, description="separate token for model control (load/unload)")
    control_key_file: str = Field("", description="read --control-key from this file")
    token_grace_s: float = Field(
        30.0, ge=0, description="when a key file changes, its previous token is still accepted this long (0 = not)"
    )
    tls_certfile: str = Field("", description="PEM certificate (chain): serve HTTP and gRPC over TLS")
    tls_keyfile: str = Field("", description="PEM private key of --tls-certfile")
    tls_client_ca: str = Field(
        "", description="PEM CA certificate(s): both ports require a client certificate it signed (mTLS)"
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``MODELPORT_PROVIDERS`` as the flag takes it (a comma list) or as a JSON list (was a SettingsError
        traceback for ``MODELPORT_PROVIDERS=CPUExecutionProvider``)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        return tuple(part.strip() for part in value.split(",") if part.strip())

    @field_validator("repository", mode="before")
    @classmethod
    def _folder_or_url(cls, value: Any) -> Any:
        return Path(value) if isinstance(value, str) and not is_url(value) else value

    @model_validator(mode="after")
    def _consistent_security(self) -> ServerSettings:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("--tls-certfile and --tls-keyfile go together")
        if self.tls_client_ca and not self.tls_certfile:
            raise ValueError("--tls-client-ca needs --tls-certfile and --tls-keyfile (the server's own certificate)")
        if (self.api_key and self.api_key_file) or (self.control_key and self.control_key_file):
            raise ValueError("give a key or a key file, not both")
        protected = self.api_key or self.api_key_file
        if self.model_control and protected and not (self.control_key or self.control_key_file):
            raise ValueError("--model-control with an --api-key needs its own --control-key")
        return self


class VersionPolicy(BaseModel):
    """Which versions of a model are served: the latest N, all, or specific ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latest: int | None = Field(None, ge=1)
    all: bool = False
    specific: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        if sum((self.latest is not None, self.all, bool(self.specific))) > 1:
            raise ValueError("choose one of latest, all, specific")
        return self

    def select(self, versions: list[int]) -> list[int]:
        """The served subset of the available versions, ascending."""
        ordered = sorted(versions)
        if self.all:
            return ordered
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


class RemoteConfig(BaseModel):
    """An existing server that runs the model (``runtime: torchserve`` or ``runtime: tfserving``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(description="TorchServe: inference URL http://host:8080; TF Serving: gRPC host:8500")
    model: str | None = Field(None, description="the model's name on the remote (default: this model's name)")
    version: str | None = Field(None, description="remote model version (default: the remote's default)")
    signature_name: str = Field("serving_default", description="TF Serving signature")
    timeout_ms: float = Field(30_000, gt=0, description="per-call timeout")
    health_interval_s: float = Field(2.0, gt=0, description="how often the remote's health is probed")

    def target(self, name: str) -> RemoteTarget:
        """The runtime-side description of this remote for model ``name``."""
        return RemoteTarget(
            address=self.address,
            model=self.model or name,
            version=self.version,
            signature_name=self.signature_name,
            timeout_s=self.timeout_ms / 1000,
            health_interval_s=self.health_interval_s,
        )


class ModelConfig(BaseModel):
    """Per-model serving config from ``REPO/<model>/config.yaml``; unset fields use server defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int | None = Field(None, ge=0)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int | None = Field(None, ge=1)
    inline_below_ms: float | None = Field(None, ge=0)
    timeout_ms: float | None = Field(None, gt=0)
    instances: int | None = Field(None, ge=1)
    workers: int | None = Field(
        None, ge=1, description="handler models: run the TorchServe handler in N worker processes (the instances)"
    )
    max_workers: int | None = Field(
        None, ge=1, description="TorchServe's maxWorkers, which its describe API shows (modelport does not scale)"
    )
    version_policy: VersionPolicy = VersionPolicy()
    default_version: int | None = Field(None, ge=1)
    version_labels: dict[str, int] = Field(default_factory=dict, description="TF Serving labels, e.g. stable: 3")
    device: str | None = None
    intra_op_threads: int | None = Field(None, ge=0)
    onnx_arena: OnnxArena | None = Field(None, description="session | shared | none (default: the server's)")
    finite_inputs: bool = Field(False, description="refuse NaN/Inf in float inputs with a 400")
    runtime: str | None = Field(
        None, description="torchserve | tfserving (with remote:) or a custom runtime class as package.module:Class"
    )
    remote: RemoteConfig | None = None
    processors: ProcessingSpec | None = Field(
        None, description="pre/post steps (see modelport.processing.config), or {handler: image_classifier}"
    )
    pipeline: PipelineSpec | None = Field(
        None, description="this model is a pipeline of served models and processors (see serving/pipeline_spec.py)"
    )

    @field_validator("processors", mode="before")
    @classmethod
    def _expand_handler(cls, value: object) -> object:
        return expand_handler(value)

    @model_validator(mode="after")
    def _remote_needs_runtime(self) -> ModelConfig:
        if (self.runtime in REMOTE_RUNTIMES) != (self.remote is not None):
            raise ValueError(f"runtime: {' or '.join(REMOTE_RUNTIMES)} and a remote: section go together")
        if self.workers is not None and self.instances is not None:
            raise ValueError("workers: N already runs N instances (one per worker process); drop instances:")
        if self.pipeline is not None and (self.processors is not None or self.runtime is not None):
            # they were ignored: a pipeline's payloads go through its processors steps, its models are its steps
            raise ValueError("a pipeline runs its own steps: put processors in a processors step, drop runtime:")
        return self


def read_model_config(model_dir: Path) -> ModelConfig:
    """Read ``config.yaml`` beside the version directories (absent = defaults)."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
        return ModelConfig.model_validate(data)
    except (yaml.YAMLError, OSError) as exc:
        raise InvalidArgumentError(f"{path}: cannot read: {_one_line(exc)}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidArgumentError(f"{path}: invalid at {where}: {_message(first)}") from None


def _message(error: ErrorDetails) -> str:
    """pydantic's message in config.yaml's words: a check's own text without "Value error, ", and a YAML list
    where pydantic says tuple (``pre: {kind: image}`` was "Input should be a valid tuple")."""
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    if error["type"] == "tuple_type":
        given = {"dict": "a mapping", "str": "a string"}.get(type(error["input"]).__name__, "that")
        return f"should be a list ([...] or '- ' items), not {given}"
    return error["msg"]


def _one_line(exc: Exception) -> str:
    """A YAML syntax error as one line (where and what; PyYAML's text spans several, quoting the source)."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())
