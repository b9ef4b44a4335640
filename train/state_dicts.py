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
    # an integer tensor where a float one belongs: not what any trainer saves (a damaged or foreign file), and
    # copying it in would silently drop fractions
    integral = sorted(k for k in set(given) & set(expected)
                      if expected[k].is_floating_point() and not given[k].is_floating_point())
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{len(misshapen)} keys of the wrong shape (e.g. {k}: {tuple(given[k].shape)} "
                        f"given, {tuple(expected[k].shape)} expected)")
    if integral:
        k = integral[0]
        problems.append(f"{len(integral)} keys of integers where numbers with fractions belong (e.g. {k}: "
                        f"{given[k].dtype})")
    return problems


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity (a damaged file, a diverged
    run); None when every value is finite."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return name
    return None
