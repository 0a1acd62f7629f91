"""berth-modeld settings: BERTH_MODELD_* environment variables and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from berth.common.settings import DaemonSettings


class ModeldSettings(DaemonSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_MODELD_",
        cli_prog_name="berth-modeld",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    state_dir: Path = Field(Path("/var/lib/berth/models"), description="model store and state")
    huggingface_endpoint: str = Field(
        "https://huggingface.co", description="the Hugging Face Hub that hf.co/... pulls use"
    )
    memory_limit: int | None = Field(
        None,
        gt=0,
        description="bytes of memory the runtime memory check of pull allows"
        " (default: the machine's)",
    )
    operation_retention: float = Field(
        3600.0, gt=0, description="seconds a finished pull, push or package stays watchable"
    )
    registry_timeout: float = Field(
        30.0, gt=0, description="seconds without progress before a registry call fails"
    )
    openai_host: str = Field(
        "127.0.0.1", description="address of the OpenAI-compatible HTTP API (the runner's --host)"
    )
    openai_port: int = Field(
        12434, ge=0, le=65535, description="its port (the runner's --port; 0: any free port)"
    )
    keep_alive: float = Field(
        300.0, description="seconds an idle engine stays loaded (negative: never unloads)"
    )
    max_loaded_models: int = Field(2, gt=0, description="engines loaded at once at most")
    engine_load_timeout: float = Field(
        300.0, gt=0, description="seconds an engine may take to load its model"
    )
    vllm_python: Path | None = Field(
        None,
        description="the Python of the environment vLLM is installed in (default: berth-modeld's"
        " own)",
    )
    vllm_args: str = Field(
        "",
        description="more vLLM arguments for every vLLM engine, e.g. --enforce-eager (given"
        " last, they override berth's)",
    )
    listen: list[str] = Field(
        default_factory=lambda: ["unix:///run/berth/modeld.sock"],
        description="unix:///path.sock or host:port (repeatable)",
    )
