"""Model families with a width multiplier, so device tiers can get narrower versions of the same design."""

from __future__ import annotations

import torch
from torch import nn

from fedcompress.errors import ConfigError


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class _TwoConvNet(nn.Module):
    """Two conv blocks (conv, ReLU, 2x2 max-pool) and two dense layers.

    The layers are plain attributes in a fixed order (conv1, conv2, fc1, fc2) so that structured pruning can
    remove output channels of one layer and the matching inputs of the next.
    """

    kernel: int = 5
    channels: tuple[int, int, int] = (32, 64, 128)  # conv1, conv2, fc1 at width 1
    side: int = 28  # input height = width

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2, h = (_ch(c, width) for c in self.channels)
        pad = self.kernel // 2
        self.conv1 = nn.Conv2d(in_channels, c1, self.kernel, padding=pad)
        self.conv2 = nn.Conv2d(c1, c2, self.kernel, padding=pad)
        self.fc1 = nn.Linear(c2 * (self.side // 4) ** 2, h)
        self.fc2 = nn.Linear(h, num_classes)
        self.pool = nn.MaxPool2d(2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return torch.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class CNN28(_TwoConvNet):
    """For 28x28 grey images: 5x5 convs, 32-64 channels, 128 hidden (461,630 parameters at width 1, 62 classes)."""


class CNN8(_TwoConvNet):
    """For the 8x8 embedded digits: 3x3 convs, 16-32 channels, 64 hidden; fast enough for a default job in seconds."""

    kernel = 3
    channels = (16, 32, 64)
    side = 8


class _BatchNormNet(_TwoConvNet):
    """The two-conv design with BatchNorm after each conv: its state holds running statistics and an int64
    `num_batches_tracked` per BatchNorm, the buffers a federated framework must carry exactly."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 1) -> None:
        super().__init__(num_classes, width, in_channels)
        self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)
        self.bn2 = nn.BatchNorm2d(self.conv2.out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return torch.relu(self.fc1(x.flatten(1)))


class CNN28BN(_BatchNormNet):
    """CNN28 with BatchNorm (28x28 grey images)."""


class CNN8BN(_BatchNormNet):
    """CNN8 with BatchNorm (the 8x8 embedded digits)."""

    kernel = 3
    channels = (16, 32, 64)
    side = 8


class CNN32(nn.Module):
    """Three 3x3 conv blocks (32-64-128 channels at width 1) and two dense layers for 32x32 RGB images."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3, h = _ch(32, width), _ch(64, width), _ch(128, width), _ch(256, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc1 = nn.Linear(c3 * 4 * 4, h)
        self.fc2 = nn.Linear(h, num_classes)
        self.pool = nn.MaxPool2d(2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.pool(torch.relu(self.conv3(x)))
        return torch.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class CharLSTM(nn.Module):
    """Character LSTM for next-character prediction (LEAF Shakespeare: embedding 8, two LSTM layers of 256)."""

    def __init__(
        self, num_classes: int = 80, width: float = 1.0, embed_dim: int = 8, num_layers: int = 2
    ) -> None:
        super().__init__()
        hidden = _ch(256, width)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return out[:, -1, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


MODELS: dict[str, type[nn.Module]] = {
    "cnn28": CNN28, "cnn28bn": CNN28BN, "cnn32": CNN32, "cnn8": CNN8, "cnn8bn": CNN8BN, "lstm": CharLSTM,
}  # fmt: skip


def build_model(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build a model by name; `width` scales every hidden size (tiers use width < 1)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if not 0 < width <= 4:
        raise ConfigError(f"model width must be in (0, 4], got {width}")
    return MODELS[name](num_classes=num_classes, width=width)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
