"""Exported models: export once to EXPORT_DIR, atomically, then run them with ONNX Runtime.

Every model the project runs outside torch (the detector, the CLIP towers, MiniLM, MobileNet) goes through the
same three steps, kept here once:

1. `export_once(path, write)`: `write(tmp)` writes the model to a temporary file beside `path`, which is then
   renamed into place, so a crash or a kill mid-export never leaves a half file that a later start would load;
   a file already at `path` (keyed by the weights' hash in its name) is reused.
2. `torch_to_onnx(module, args, tmp, ...)`: torch's TorchScript-based exporter with the settings every export
   here shares (opset 17, constant folding, dynamic axes). `dynamo=False`: torch >= 2.9 defaults to the
   torch.export exporter, which needs `onnxscript`.
3. `ort_session(path, threads)`: an ONNX Runtime session on the CPU provider, all graph optimisations on, its
   threads sleeping between runs instead of spinning.

`onnx_or_fallback` is the `RUNTIME=auto|onnx` policy each model's loader shares: with `onnx` a failed export is
an error that says which setting to change; with `auto` it is a warning and the model runs on its own runtime.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: where exports go when no EXPORT_DIR is given (relative to the working directory; Settings.export_dir overrides)
DEFAULT_EXPORT_DIR = Path("models") / "exported"


#: OpenVINO's CPU plugin infers in bf16 by default on CPUs with AVX-512 BF16 / AMX (OpenVINO docs, "Precision
#: Control": the default inference precision depends on the device), so the same weights gave other boxes on those
#: machines; f32 makes every CPU compute what ONNX Runtime and torch compute.
OPENVINO_CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


_warned_devices: set[str] = set()


def resolve_device(device: str | int | None) -> str:
    """A user device string ("cpu", "0", "cuda:0", "mps") as the device to run on: "cpu", "cuda:N", "mps", ….

    "cpu" (and empty) never imports torch, so the serving image, which has none, resolves its device. A CUDA device
    on a machine without one falls back to "cpu" with a single warning line.
    """
    d = str(device if device is not None else "cpu").strip().lower()
    if d in ("", "cpu"):
        return "cpu"
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None  # type: ignore[assignment]
    if d.isdigit() or d.startswith("cuda"):
        if torch is not None and torch.cuda.is_available():
            return f"cuda:{d}" if d.isdigit() else d
        if d not in _warned_devices:
            _warned_devices.add(d)
            log.warning("device %r requested but no CUDA GPU is available%s: running on the CPU", d,
                        "" if torch is not None else " (torch is not installed)")
        return "cpu"
    return d


def require_torch(what: str) -> None:
    """Raise a RuntimeError that says what to do when torch is not installed (the serving image) and `what` needs it.
    """
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        raise RuntimeError(
            f"{what}, and torch is not installed here (the serving image runs exports only): export it where the "
            "`train` extra is installed — `docker compose run --rm init`, or `python -m "
            "clip_embedder.scripts.export_models` with the same EXPORT_DIR") from None


def export_once(path: Path, write: Callable[[str], object]) -> Path:
    """`path`, written by `write(tmp_path)` unless it already exists; atomic (temporary file, then rename).

    Raises:
        whatever `write` raises; the temporary file is removed and `path` is left absent.
    """
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the suffix: some writers pick the format by it (onnx.save does)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600; other users of EXPORT_DIR (an API container, say) read it
        os.replace(tmp, path)
        log.info("exported %s", path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def torch_to_onnx(module: Any, args: tuple, out: str, *, input_names: Sequence[str], output_names: Sequence[str],
                  dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Export a torch module to ONNX at `out` (opset 17, constant folding, TorchScript-based exporter)."""
    import torch  # noqa: PLC0415

    torch.onnx.export(module.eval(), args, out, opset_version=17, do_constant_folding=True,
                      input_names=list(input_names), output_names=list(output_names), dynamic_axes=dynamic_axes,
                      dynamo=False)


def ort_session(path: Path | str, threads: int | None = None) -> Any:
    """An ONNX Runtime `InferenceSession` of `path` on the CPU provider; `threads` intra-op threads (None: ONNX
    Runtime's default, one per core)."""
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: on a few cores the spinning threads take the CPU from whatever runs next
    # (FAISS, PostgreSQL, the next model); a 1M-item text query went 20.7 → 16.4 ms p50 in the service
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_or_fallback(open_onnx: Callable[[], T], *, required: bool, setting: str, what: str,
                     fallback: str) -> T | None:
    """`open_onnx()`, or None when it fails and ONNX was not `required` (a warning names the runtime used instead).

    Raises:
        RuntimeError: it failed and `required` (`setting`=onnx): the message names the setting's other value.
    """
    try:
        return open_onnx()
    except Exception as e:
        if required:
            raise RuntimeError(f"{setting}=onnx: cannot export or open {what} as ONNX ({type(e).__name__}: {e}); "
                               f"use {setting}={fallback}") from e
        log.warning("%s runs on %s: the ONNX export failed (%s: %s)", what, fallback, type(e).__name__, e)
        return None


def open_session(runtime: str, onnx_path: Path) -> Any:
    """An inference session of an exported detector: ONNX Runtime (CPU provider) or OpenVINO (CPU device).

    Raises:
        RuntimeError: the runtime's package is not installed (the message names it).
    """
    if runtime == "onnx":
        return ort_session(onnx_path)
    try:
        import openvino as ov  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError("DETECTOR_RUNTIME=openvino needs the PyPI package openvino (pip install "
                           "'.[openvino]'), or use DETECTOR_RUNTIME=onnx") from e
    return ov.Core().compile_model(str(onnx_path), "CPU", OPENVINO_CPU_CONFIG)


def freeze_heap() -> None:
    """Move every object alive now into the garbage collector's permanent generation (`gc.freeze`): called once a
    process has loaded its models (the API, a worker, the CLI's sequential runner, a Ray actor).

    The API holds ~430,000 long-lived objects after start-up (torch and sympy alone bring ~50,000 functions);
    each full collection walked them all: ~150 ms with the GIL held, every ~2.5 s under 8 searching clients
    (objects of in-flight requests survive into the old generation and trigger it), so health and searches
    queued behind it. Frozen objects are never scanned again; those freed by reference counting are still freed.
    The pattern CPython's documentation gives for `gc.freeze` (collect, then freeze once the process is set up);
    Instagram's "Dismissing Python Garbage Collection at Instagram" measured the same pauses."""
    import gc  # noqa: PLC0415

    gc.collect()
    gc.freeze()
