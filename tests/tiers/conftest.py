"""Shared fixtures for the delivery pipeline and budget tests: digits as tensors, a teacher trained on them."""

from __future__ import annotations

import pytest
import torch

from fedcompress.data import load_dataset
from fedcompress.models import build_model
from fedcompress.training import train


@pytest.fixture(scope="module")
def digits(shared_data):
    ds = load_dataset("digits", shared_data)
    x, y = torch.from_numpy(ds.x_train.copy()), torch.from_numpy(ds.y_train.copy())
    return x, y, torch.from_numpy(ds.x_test.copy()), torch.from_numpy(ds.y_test.copy())


@pytest.fixture(scope="module")
def teacher(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = build_model("cnn8", 10, 1.0)
    train(model, x.numpy(), y.numpy(), epochs=8, lr=0.05, batch_size=32, seed=0)
    return model.eval()
