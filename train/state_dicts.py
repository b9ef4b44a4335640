"""How a state dict differs from the one a module expects, said in one line (checkpoints and weight files)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _examples(keys: list[str], n: int = 4) -> str:
    more = f", ... {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def mismatches(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and misshapen keys of `given`, counted with a few examples; [] when it fits."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshapen = sorted(k for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{len(misshapen)} keys of the wrong shape (e.g. {k}: {tuple(given[k].shape)} "
                        f"given, {tuple(expected[k].shape)} expected)")
    return problems


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity (a damaged file, a diverged
    run); None when every value is finite."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return name
    return None
