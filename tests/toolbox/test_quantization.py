"""Int8 PTQ / QAT, k-means weight sharing and sizes measured from serialized artefacts."""

import pytest
import torch

from fedcompress.models import build_model
from fedcompress.pruning import magnitude_prune
from fedcompress.quantization import (
    SharedModel,
    convert_qat,
    int8_bytes,
    kmeans_1d,
    kmeans_share,
    load_int8,
    prepare_qat,
    quantize_int8,
    saved_size,
    state_dict_size,
    torchscript_size,
)
from fedcompress.quantization.kmeans import pack_indices, unpack_indices


@pytest.fixture(scope="module")
def cnn28_and_data():
    torch.manual_seed(0)
    model = build_model("cnn28", 10, 0.5).eval()
    x = torch.rand(64, 1, 28, 28)
    return model, x


def test_ptq_int8_is_about_4x_smaller_and_agrees(cnn28_and_data):
    model, x = cnn28_and_data
    q = quantize_int8(model, [x[i : i + 16] for i in range(0, 64, 16)])
    fp32_bytes = torchscript_size(model, x[:1])
    int8_bytes = torchscript_size(q, x[:1])
    assert fp32_bytes / int8_bytes > 3.0
    assert state_dict_size(model) / saved_size(q.state_dict()) > 3.0
    with torch.no_grad():
        agree = (q(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree >= 0.9
    assert not any(p.is_floating_point() for p in q.parameters())  # weights live in packed int8 params


def test_ptq_rejects_unknown_engine(cnn28_and_data):
    model, x = cnn28_and_data
    with pytest.raises(ValueError, match="engine"):
        quantize_int8(model, x, engine="tpu")


def test_dynamic_int8_for_lstm():
    torch.manual_seed(0)
    model = build_model("lstm", 30, 0.25).eval()
    x = torch.randint(0, 30, (8, 12))
    q = quantize_int8(model, x)
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), atol=0.05)
    assert saved_size(q.state_dict()) < 0.5 * state_dict_size(model)


def test_qat_prepare_train_convert():
    torch.manual_seed(0)
    model = build_model("cnn8", 10, 0.5)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    prepared = prepare_qat(model, x[:1])
    opt = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(prepared(x), y).backward()
        opt.step()
    q = convert_qat(prepared)
    with torch.no_grad():
        fake, real = prepared.eval()(x), q(x)
    assert real.shape == (32, 10)
    assert (fake.argmax(1) == real.argmax(1)).float().mean() >= 0.9


def test_kmeans_1d_finds_obvious_clusters():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([c + 0.01 * torch.randn(200, generator=g) for c in (-1.0, 0.5, 2.0)])
    book, idx = kmeans_1d(v, 3)
    assert torch.allclose(book, torch.tensor([-1.0, 0.5, 2.0]), atol=0.01)
    assert torch.equal(idx, torch.arange(3).repeat_interleave(200))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_roundtrip(bits):
    idx = torch.randint(0, 2**bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_indices(idx, bits)
    assert packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_indices(packed, bits, 1001), idx)


@pytest.mark.parametrize("bits", [2, 4])
def test_kmeans_share_limits_unique_values_and_roundtrips(bits):
    torch.manual_seed(0)
    model = build_model("cnn28", 10, 0.25)
    fp32_bytes = state_dict_size(model)
    shared = kmeans_share(model, bits)
    assert shared.shared, "large weights must be shared"
    for name, w in model.state_dict().items():
        if name in shared.shared:
            assert w.unique().numel() <= 2**bits
    data = shared.to_bytes()
    assert len(data) < fp32_bytes * (bits + 2) / 32
    restored = SharedModel.from_bytes(data).state_dict()
    for name, w in model.state_dict().items():
        assert torch.equal(restored[name], w)


def test_kmeans_keeps_pruned_zeros():
    torch.manual_seed(0)
    model = build_model("cnn8", 10, 0.5)
    magnitude_prune(model, 0.7)
    zeros_before = {n: (w == 0) for n, w in model.state_dict().items() if n.endswith("weight")}
    kmeans_share(model, 3, min_numel=64)
    for n, w in model.state_dict().items():
        if n in zeros_before:
            assert torch.equal(w == 0, zeros_before[n])


def test_bad_bits_rejected():
    with pytest.raises(ValueError, match="bits"):
        kmeans_share(build_model("cnn8", 10, 0.25), 9)


def test_saved_size_equals_file_size(tmp_path):
    model = build_model("cnn8", 10, 0.25)
    # torch.save names every zip record after the file stem ("archive" for a buffer): same-length stem
    path = tmp_path / "archive.pt"
    torch.save(model.state_dict(), path)
    assert saved_size(model.state_dict()) == path.stat().st_size


def test_int8_state_dict_artefact_reloads_exactly(cnn28_and_data):
    model, x = cnn28_and_data
    q = quantize_int8(model, x)
    data = int8_bytes(q)
    assert data == int8_bytes(quantize_int8(model, x))  # deterministic bytes
    restored = load_int8(build_model("cnn28", 10, 0.5), data, x)
    with torch.no_grad():
        assert torch.equal(restored(x), q(x))
