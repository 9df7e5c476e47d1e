"""Check that Jupyter's ``python3`` kernel runs this interpreter (run by ``make setup``).

papermill and nbval start kernels by name; if ``python3`` resolved to another
Python, notebooks would import another (or no) ringnet_lib. This starts the
kernel for real, asks it for ``sys.executable``, and exits non-zero with a
message that says what to do if it is not this interpreter.
"""
from __future__ import annotations

import os
import sys


def kernel_executable(kernel_name: str = "python3", timeout: float = 60.0) -> str:
    """``sys.executable`` as reported by a freshly started kernel."""
    from jupyter_client.manager import start_new_kernel  # lazy: the notebooks extra, only for this check
    manager, client = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    outputs: list = []
    try:
        reply = client.execute_interactive("import sys; print(sys.executable, end='')", timeout=timeout,
                                           output_hook=lambda msg: outputs.append(msg))
        assert reply["content"]["status"] == "ok", reply
        texts = [m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream"]
        return "".join(texts).strip()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main() -> int:
    found = kernel_executable()
    if os.path.realpath(found) != os.path.realpath(sys.executable):
        print(f"The Jupyter kernel 'python3' runs {found!r}, not {sys.executable}.\n"
              "Put this environment's bin/ first on PATH (the Makefile does), or remove the other kernelspec "
              f"(jupyter kernelspec list), or run: {sys.executable} -m ipykernel install --sys-prefix --name python3",
              file=sys.stderr)
        return 1
    print(f"Jupyter kernel 'python3' runs {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
