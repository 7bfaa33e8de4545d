"""Where a warning should point: the first stack frame outside the tlgp_torch package (the user's call)."""
from __future__ import annotations

import os
import sys

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def caller_stacklevel() -> int:
    """The `stacklevel` for warnings.warn, called from inside tlgp_torch, that names the user's line: the first
    frame whose file lies outside the package (however many trainer layers sit between), so a warning raised deep
    in a fit points at the script's `fit(...)` call.

    Example:
        >>> from tlgp_torch.runtime.caller import caller_stacklevel
        >>> caller_stacklevel() >= 1
        True
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
