"""Keep torch out of processes that have no use for it.

presidio_analyzer imports transformers whenever it is installed (for an NLP engine Kiln never
builds) and torch to look for a GPU, at import time, and spaCy's thinc imports torch too. Where training's packages sit
beside the ETL's, as in Kiln's own environment, that cost every Python worker that ran the pii stage,
and the report's driver, seconds and a few hundred MB before the first document: on the 2-core
development VM (load about 1) building the pii stage's redactor took 7.0-9.1 s with torch imported
and 1.2-1.3 s without. Inside ``torch_hidden()`` an ``import torch`` or ``import transformers`` fails as if the
package were absent, which both libraries handle; afterwards the names import normally again.
"""
from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from typing import Iterator

HIDDEN = ("torch", "transformers")


@contextmanager
def torch_hidden(unless_installed: str | None = None) -> Iterator[None]:
    """Hide torch and transformers from the imports in the block, unless they are already imported
    or the package ``unless_installed`` (one that would need them) is installed."""
    if unless_installed and importlib.util.find_spec(unless_installed) is not None:
        yield
        return
    hidden = [name for name in HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import fails with ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
