"""``BatchFeature`` / ``BatchEncoding``: what the feature extractor, tokenizer and processor return, as HF's names.

A plain ``dict`` (so ``model.generate(**inputs)``, ``pickle`` and ``dict(inputs)`` work as for any dict) that also
answers HF's attribute access (``inputs.input_ids``) and ``inputs.to(device)``. Imports only numpy, so that
``chroma``, ``tokenizer`` and ``processing`` can all use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TENSOR_TYPES = (None, "np", "pt", "jax")


class BatchFeature(dict):
    """HF's ``BatchFeature``: a dict of arrays (``input_features`` float32 (B, M, C), ``attention_mask`` ...).

    Differences from HF: it is a ``dict`` subclass (HF's is a ``UserDict``); ``tensor_type`` "np", "pt" and "jax"
    all give numpy arrays, as everywhere in musicgen-jax; ``to(...)`` moves and casts nothing.
    """

    __slots__ = ()  # no instance attributes: `inputs.x = ...` must not shadow a key silently

    def __init__(self, data: Any = None, tensor_type: str | None = None):
        super().__init__(data or {})
        tensor_type = getattr(tensor_type, "value", tensor_type)  # HF's TensorType enum
        if tensor_type not in _TENSOR_TYPES:
            raise ValueError(f"tensor_type must be one of {list(_TENSOR_TYPES)}, got {tensor_type!r}")
        if tensor_type is not None:
            for key, value in self.items():
                try:
                    self[key] = np.asarray(value)
                except ValueError as e:  # ragged lists
                    raise ValueError(f"{key!r} cannot be made one array ({e}); pad the batch first") from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and numpy probe dunders; never answer them from the keys
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key or attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(k for k in self if isinstance(k, str))})

    @property
    def data(self) -> dict:
        """The mapping itself (HF's underlying dict): writes through it change this object."""
        return self

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:  # noqa: ARG002
        """``inputs.to("cuda")`` / ``inputs.to(device)`` / ``inputs.to(dtype)``: returns ``self`` unchanged.

        HF moves torch tensors to a device (and casts floating ones to a dtype); musicgen-jax takes numpy arrays and
        places them itself, so there is nothing to do.
        """
        return self

    def copy(self) -> BatchFeature:
        return type(self)(self)


class BatchEncoding(BatchFeature):
    """HF's ``BatchEncoding``, the tokenizer's output: ``input_ids`` and ``attention_mask``, int64 (B, W) arrays with
    ``return_tensors="np"``, else Python lists. Same behaviour as :class:`BatchFeature`."""

    __slots__ = ()
