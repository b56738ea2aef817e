"""Lexical view of a token window: hashed word 1-2grams + char 3-5grams, logistic regression per label.

The MiniLM features are a mean over a 128-token window, which blurs short surface cues
(``ignore previous instructions``, ``keylogger``, ``-----BEGIN``); a linear model on hashed
n-grams keeps them. Its logit is blended with the MLP head's logit before Platt scaling
(weight chosen on out-of-fold predictions of the allowed sources, see train.py).

Stored as arrays (``lexical.safetensors``: coefficients float16, intercepts float32) plus the
vectoriser parameters in the manifest: the HashingVectorizer is stateless, so nothing needs to
be unpickled at load time. Scoring is a sparse matrix product (sub-millisecond per window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEXICAL_FILE = "lexical.safetensors"


@dataclass(frozen=True)
class LexicalConfig:
    """Vectoriser parameters, pinned in the manifest so training and serving hash alike."""

    n_features: int = 2**17  # per analyzer (word and char): 2 * 2**17 columns in all
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    C: float = 4.0  # inverse L2 strength of the logistic regression

    @classmethod
    def from_dict(cls, pinned: dict) -> LexicalConfig:
        """The config pinned in a manifest (JSON turns the tuples into lists)."""
        return cls(
            n_features=int(pinned["n_features"]),
            word_ngrams=tuple(pinned["word_ngrams"]),
            char_ngrams=tuple(pinned["char_ngrams"]),
            C=float(pinned["C"]),
        )


def _vectorizers(config: LexicalConfig):
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(n_features=config.n_features, alternate_sign=False, norm="l2", lowercase=True)
    return (
        HashingVectorizer(analyzer="word", ngram_range=tuple(config.word_ngrams), **common),
        HashingVectorizer(analyzer="char_wb", ngram_range=tuple(config.char_ngrams), **common),
    )


def featurize(config: LexicalConfig, texts: Sequence[str]):
    """Sparse CSR matrix [len(texts), 2 * n_features]."""
    from scipy import sparse

    word, char = _vectorizers(config)
    return sparse.hstack([word.transform(texts), char.transform(texts)]).tocsr()


@dataclass
class LexicalModel:
    """One linear model per label of one side: logits = X @ coef.T + intercept."""

    config: LexicalConfig
    coef: np.ndarray  # [labels, 2 * n_features]
    intercept: np.ndarray  # [labels]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.intercept)), dtype=np.float32)
        x = featurize(self.config, texts)
        return np.asarray(x @ self.coef.T, dtype=np.float32) + self.intercept


def fit_lexical(
    config: LexicalConfig, texts: Sequence[str], y: np.ndarray, weights: np.ndarray, x=None
) -> LexicalModel:
    """Fit one L2 logistic regression per label column of ``y`` (liblinear, fixed random_state).

    A label with fewer than two positives gets a constant very negative logit: nothing to learn.
    """
    from sklearn.linear_model import LogisticRegression

    x = featurize(config, texts) if x is None else x
    coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercept = np.full(y.shape[1], -5.0, dtype=np.float32)
    for j in range(y.shape[1]):
        if y[:, j].sum() < 2 or y[:, j].sum() > len(y) - 2:
            continue
        model = LogisticRegression(C=config.C, solver="liblinear", max_iter=2000, random_state=0)
        model.fit(x, y[:, j], sample_weight=weights)
        coef[j] = model.coef_[0]
        intercept[j] = model.intercept_[0]
    return LexicalModel(config, coef, intercept)


def save_lexical(path: Path, models: dict[str, LexicalModel]) -> None:
    """Coefficients as float16 (halves the artifact; logits move by <1e-3), intercepts float32."""
    from safetensors.numpy import save_file

    tensors = {}
    for side, m in sorted(models.items()):
        tensors[f"{side}.coef"] = np.ascontiguousarray(m.coef.astype(np.float16))
        tensors[f"{side}.intercept"] = np.ascontiguousarray(m.intercept.astype(np.float32))
    save_file(tensors, str(path))


def load_lexical(path: Path, config: LexicalConfig) -> dict[str, LexicalModel]:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    sides = sorted({k.split(".", 1)[0] for k in tensors})
    models = {
        side: LexicalModel(config, tensors[f"{side}.coef"].astype(np.float32), tensors[f"{side}.intercept"])
        for side in sides
    }
    for side, model in models.items():
        # Checked here, not on the first record: a pinned n_features that disagrees with the
        # stored coefficients failed every record at serving time.
        if model.coef.ndim != 2 or model.coef.shape[1] != 2 * config.n_features or model.intercept.shape != model.coef.shape[:1]:
            raise ValueError(f"{path.name}: {side} coefficients {model.coef.shape} do not fit n_features={config.n_features}")
    return models


GATE_MANIFEST = "manifest.json"


def save_gate(directory: Path, model: LexicalModel, manifest: dict) -> None:
    """A first-pass ranker (one "any misuse" label) as its own small artifact: the lexical file
    plus a manifest that pins the vectoriser, so serving hashes like training."""
    import json
    from dataclasses import asdict

    directory.mkdir(parents=True, exist_ok=True)
    save_lexical(directory / LEXICAL_FILE, {"any": model})
    body = {**manifest, "lexical": asdict(model.config)}
    (directory / GATE_MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def load_gate(directory: Path) -> tuple[LexicalModel, dict]:
    """The ranker and its manifest written by :func:`save_gate`; raises OSError, ValueError or
    KeyError when the folder is not such an artifact."""
    import json

    manifest = json.loads((directory / GATE_MANIFEST).read_text())
    return load_lexical(directory / LEXICAL_FILE, LexicalConfig.from_dict(manifest["lexical"]))["any"], manifest
