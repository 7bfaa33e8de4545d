"""Training data as tensors: an AtomDataset or (x, y) tuple on the trainers' device and dtype, checked.

`prepare` turns one task into (x [N, D], y [N], cyclic [D] or None, name) in FitSettings.dtype on
FitSettings.device, and raises ValueError for data no GP can be fitted to (NaN, constant y, identical points);
`prepare_tasks` stacks tasks of equal N and D into one batched problem x [B, N, D], y [B, N].

Example:
    >>> import torch
    >>> from tlgp_torch.training.prepare import prepare_tasks
    >>> from tlgp_torch.training.settings import FitSettings
    >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])          # float32 in, float64 out
    >>> y = torch.tensor([1.0, 2.0, 4.0])
    >>> xs, ys, cyclic, names = prepare_tasks(FitSettings(device="cpu"), [((x, y), "E"), ((x, 2 * y), "E2")])
    >>> xs.shape, ys.shape, ys.dtype, cyclic, names
    (torch.Size([2, 3, 2]), torch.Size([2, 3]), torch.float64, None, ['E', 'E2'])
    >>> prepare_tasks(FitSettings(device="cpu"), [((x, torch.ones(3)), "q00")])
    Traceback (most recent call last):
    ...
    ValueError: property 'q00' is constant (1.0 at all 3 points): there is nothing for a GP to learn ...
"""
from __future__ import annotations

import warnings

import torch
from linear_operator.utils.warnings import NumericalWarning

from tlgp_torch.runtime.caller import caller_stacklevel
from tlgp_torch.runtime.device import resolve_device
from tlgp_torch.training.settings import FitSettings


def prepare_tasks(settings: FitSettings, tasks: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list]:
    """Stack tasks [(data, prop), ...] sharing N and D into x [B, N, D], y [B, N] (one batched model)."""
    if not tasks:
        raise ValueError("no tasks to fit")
    prepared = [prepare(settings, data, prop) for data, prop in tasks]
    shapes = {tuple(p[0].shape) for p in prepared}
    if len(shapes) > 1:
        raise ValueError(f"tasks batched together need the same number of points and features; got {sorted(shapes)}")
    cyc = [p[2] for p in prepared]
    if any((c is None) != (cyc[0] is None) or (c is not None and not torch.equal(c, cyc[0])) for c in cyc):
        raise ValueError("tasks batched together need the same periodic-feature mask")
    x = torch.stack([p[0] for p in prepared])
    y = torch.stack([p[1] for p in prepared])
    return x, y, cyc[0], [p[3] for p in prepared]


def prepare(settings: FitSettings, data, prop: str | None):
    """(x, y, cyclic, name) on the chosen device from an AtomDataset (+ property) or an (x, y[, cyclic]) tuple."""
    device = resolve_device(settings.device)
    if isinstance(data, tuple):
        x, y = data[0], data[1]
        cyclic = data[2] if len(data) > 2 else None
        name = prop
    else:
        names = data.property_names
        if prop is None:
            if len(names) != 1:
                raise ValueError(f"dataset has properties {names}: name the one to train")
            prop = names[0]
        x, y, cyclic, name = data.x, data.property(prop), data.cyclic, prop
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.requires_grad or y.requires_grad:
        warnings.warn("training data require grad: training uses x.detach() and y.detach() (hyperparameters are "
                      "fitted to the values; no gradient flows back into the data)", UserWarning,
                      stacklevel=caller_stacklevel())
    x = x.detach().to(device=device, dtype=settings.dtype)
    y = y.detach().to(device=device, dtype=settings.dtype).reshape(-1)
    if x.dim() != 2 or y.numel() != x.shape[0]:
        raise ValueError(f"x must be [N, D] with one target per row; got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 training points, got {x.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("training data contain NaN or inf")
    what = f"property {name!r}" if name else "y"
    if bool((y == y[0]).all()):
        raise ValueError(f"{what} is constant ({float(y[0])!r} at all {y.numel()} points): there is nothing for a "
                         "GP to learn (its variance is 0); predict the constant instead")
    if bool((x == x[0]).all()):
        raise ValueError(f"all {x.shape[0]} training points are identical: the kernel matrix is all ones and no "
                         "lengthscale can be learned")
    if x.shape[0] < x.shape[1]:
        warnings.warn(f"fewer training points ({x.shape[0]}) than features ({x.shape[1]}): the {x.shape[1]} "
                      "lengthscales are barely determined by the data", UserWarning, stacklevel=caller_stacklevel())
    if cyclic is not None:
        cyclic = torch.as_tensor(cyclic, dtype=torch.bool, device=device)
    _warn_duplicates(x, getattr(data, "source", None))
    return x, y, cyclic, name


def _warn_duplicates(x: torch.Tensor, source) -> None:
    """Warn about identical training points: they make R singular at a small nugget (jitter will be added)."""
    uniq, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    if uniq.shape[0] == x.shape[0]:
        return
    dup_groups = torch.nonzero(counts > 1).flatten()[:3]
    rows = [torch.nonzero(inverse == g).flatten().tolist()[:4] for g in dup_groups.tolist()]
    where = f" in {source}" if source else ""
    warnings.warn(f"{x.shape[0] - uniq.shape[0]} duplicate training point(s){where} (0-based rows, e.g. {rows}); "
                  "the kernel matrix will need jitter above the nugget: remove them for a clean model",
                  NumericalWarning, stacklevel=caller_stacklevel())


def generator(seed: int) -> torch.Generator:
    """CPU generator seeded from the config (random draws are made on the CPU, then moved)."""
    return torch.Generator().manual_seed(int(seed))
