"""The files of a feature extractor, as HF writes them: one ``preprocessor_config.json`` of its ``to_dict()``.

:class:`FeatureExtractorFiles` is the one implementation of the JSON round trip that both feature extractors
(``chroma.MusicgenMelodyFeatureExtractor``, ``encodec_features.EncodecFeatureExtractor``) share; each class supplies
``to_dict`` and a strict ``from_dict(data, where=...)``.
"""

from __future__ import annotations

import json
import os

from musicgen_jax.config import read_json
from musicgen_jax.files import atomic_write

FEATURE_EXTRACTOR_NAME = "preprocessor_config.json"


class FeatureExtractorFiles:
    """``from_json_file``, ``to_json_string``, ``to_json_file`` (atomic), ``save_pretrained`` and ``__repr__`` over
    the class's ``to_dict`` / ``from_dict``."""

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike):
        """An extractor from a JSON file (ours or HF's ``to_json_file``), read strictly as ``from_dict``."""
        file = os.fspath(json_file)
        return cls.from_dict(read_json(file), where=file)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Writes :meth:`to_json_string` to ``json_file_path`` atomically: a temporary file in the same folder,
        fsynced, then ``os.replace``d over the path (an interrupted write leaves the old file or none)."""
        with atomic_write(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Writes ``save_directory/preprocessor_config.json`` (as HF formats it); returns ``[that path]``."""
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory}: is a file; save_pretrained needs a directory")
        os.makedirs(save_directory, exist_ok=True)
        file = os.path.join(save_directory, FEATURE_EXTRACTOR_NAME)
        self.to_json_file(file)
        return [file]

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
