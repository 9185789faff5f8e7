"""Exported sizes are the bytes on disk; int8 is smaller; latency is measured."""

import os

import pytest
import torch

from fedcompress.export import export_model
from fedcompress.models import build_model, count_parameters


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "int8"])
def test_export_reports_real_size(tmp_path, fmt):
    torch.manual_seed(0)
    model = build_model("cnn28", 10, 0.25)
    x = torch.rand(8, 1, 28, 28)
    report = export_model(model, tmp_path / f"m.{fmt}", fmt, x, latency_runs=5)
    assert report.bytes_on_disk == os.path.getsize(report.path)
    assert report.params == count_parameters(model)
    assert report.latency_ms_p50 > 0 and report.threads == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_int8_export_smaller_and_loadable(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn28", 10, 0.5)
    x = torch.rand(8, 1, 28, 28)
    fp32 = export_model(model, tmp_path / "f.pt", "torchscript", x, latency_runs=3)
    int8 = export_model(model, tmp_path / "q.pt", "int8", x, latency_runs=3)
    assert int8.bytes_on_disk * 3 < fp32.bytes_on_disk
    loaded = torch.jit.load(int8.path)
    assert loaded(x).shape == (8, 10)


def test_export_rejects_bad_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        export_model(build_model("cnn8", 10, 0.25), tmp_path / "x", "onnx", torch.rand(1, 1, 8, 8))
