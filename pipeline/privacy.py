"""What the lake may keep of a record, and the keys that protect it.

- :class:`LakePolicy` decides per record whether its text (the inference log) is stored:
  ``raw_text: none | flagged | all`` (default ``flagged``: only what a reviewer may need to
  read). Every row keeps keyed hashes and lengths of its prompt and completion, its language
  when known, and the verdict, so counts, duplicates and campaigns stay computable.
- A stored log never holds a raw identifier: ``user_id``, chat participant ``name`` and
  identifier-like ``metadata`` values are replaced by the same keyed hash (HMAC-SHA256 with
  ``pseudonym_key``) the verdicts use, so a lake row links to its verdict and to nothing else.
- :class:`TextCipher` optionally encrypts the kept log (AES-256-GCM, key from
  ``MM_LAKE__ENCRYPTION_KEY``, the request id as associated data so a ciphertext cannot be
  moved to another row).
- :data:`DEFAULT_PSEUDONYM_KEY` is the placeholder shipped in settings; :func:`check_pseudonym_key`
  is what ``stream`` runs before it starts (docs/privacy.md says why it refuses rather than
  generating a key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from pipeline.schemas import InferenceLog
from pipeline.verdicts import Pseudonymizer

RawText = Literal["none", "flagged", "all"]
DEFAULT_PSEUDONYM_KEY = "change-me-in-production"
MIN_KEY_CHARS = 16
# metadata keys whose values identify a person or a device (pseudonymised in stored logs).
# A match anywhere in a key counts (``client_ip``, ``x_forwarded_for``): keeping an identifier
# raw costs more than pseudonymising a value that was not one.
IDENTIFIER_KEY = re.compile(
    r"(?i)(user|session|account|customer|client|device|member|mail|phone|mobile|msisdn|ip|addr|forward|"
    r"login|uid|name|"
    # Credentials a gateway or client logs next to the request (an Authorization header, a
    # cookie, an API key): a privacy review (2026-12-04) found them stored raw in kept logs.
    r"auth|cookie|secret|passw|pwd|credential|token(?!s)|api[_-]?key|access[_-]?key|signature)"
)
# An object key that is a field name rather than data (see _pseudonymise_metadata).
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z_]{0,39}")
NONCE_BYTES = 12


class PrivacyKeyError(ValueError):
    """A pseudonym or encryption key is missing, a placeholder, or malformed."""


def check_pseudonym_key(key: str, *, dev: bool) -> None:
    """Refuse the shipped placeholder key (and short keys) unless ``dev`` is set.

    With the placeholder, anyone who reads this source can recompute every pseudonym from a
    list of candidate user ids: pseudonymisation would be decorative.
    """
    if dev:
        return
    if key == DEFAULT_PSEUDONYM_KEY:
        raise PrivacyKeyError(
            "pseudonym_key is the shipped placeholder; set MM_PSEUDONYM_KEY to a secret of at least "
            f"{MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`), or pass --dev for a local demo"
        )
    if len(key) < MIN_KEY_CHARS:
        raise PrivacyKeyError(f"pseudonym_key is shorter than {MIN_KEY_CHARS} characters")


class TextCipher:
    """AES-256-GCM for kept text. Output: nonce (12 bytes) || ciphertext || tag (16 bytes),
    the layout Spark's ``aes_decrypt(..., 'GCM')`` reads as well."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise PrivacyKeyError("lake encryption key must be 32 bytes (base64-encoded in MM_LAKE__ENCRYPTION_KEY)")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    @classmethod
    def from_b64(cls, value: str) -> TextCipher:
        return cls(cls.key_bytes(value))

    @staticmethod
    def key_bytes(value: str) -> bytes:
        """The 32-byte key a base64 text holds (PrivacyKeyError otherwise). Needs no
        ``cryptography``, so the settings check it where the privacy extra is not installed."""
        try:
            key = base64.urlsafe_b64decode(value.strip().encode() + b"=" * (-len(value.strip()) % 4))
        except ValueError as exc:
            raise PrivacyKeyError("lake encryption key is not valid base64") from exc
        if len(key) != 32:
            raise PrivacyKeyError("lake encryption key must be 32 bytes (base64-encoded in MM_LAKE__ENCRYPTION_KEY)")
        return key

    @staticmethod
    def generate() -> str:
        """A new random key, base64 (what ``misuse-monitor lake keygen`` prints)."""
        return base64.urlsafe_b64encode(os.urandom(32)).decode()

    def encrypt(self, plaintext: str, associated: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), associated.encode("utf-8"))

    def decrypt(self, blob: bytes, associated: str) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated.encode("utf-8"))
        except InvalidTag as exc:
            raise PrivacyKeyError("cannot decrypt: another key, another row, or altered data") from exc
        return plain.decode("utf-8")


def text_hash(key: bytes, text: str | None) -> str | None:
    """Keyed hash of a text: equal texts (campaign duplicates) collide, but nobody without the
    key can confirm a guessed prompt against the lake, as they could with a plain SHA-256."""
    if text is None:
        return None
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def pseudonymise_log(log: InferenceLog, pseudonymize: Pseudonymizer | None) -> InferenceLog:
    """``log`` with its identifiers replaced by pseudonyms (or dropped when there is no key)."""

    def pseudo(value: Any) -> Any:
        if value is None:
            return None
        return pseudonymize(str(value)) if pseudonymize is not None else None

    update: dict[str, Any] = {"user_id": pseudo(log.user_id)}
    if log.messages:
        update["messages"] = [m.model_copy(update={"name": pseudo(m.name)}) if m.name else m for m in log.messages]
    if log.metadata:
        update["metadata"] = _pseudonymise_metadata(log.metadata, pseudo)
    return _pseudonymise_extras(log.model_copy(update=update), pseudo)


def _pseudonymise_extras(model: Any, pseudo: Callable[[Any], Any]) -> Any:
    """``model`` with the fields the contract does not name (a message's, tool call's, usage's
    or tool's extra fields, at any depth) under the metadata policy: values under an identifier
    key pseudonymised. Until a privacy review (2026-12-07) only ``metadata`` was, so a message's
    ``"user": "alice@example.com"`` or a tool call's ``caller_email`` was kept raw in the lake."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        if name == "metadata":  # its own pass, above
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            new = _pseudonymise_extras(value, pseudo)
            if new is not value:
                update[name] = new
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            items = [_pseudonymise_extras(v, pseudo) if isinstance(v, BaseModel) else v for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                update[name] = items
    extra = model.__pydantic_extra__
    if extra:
        cleaned = _pseudonymise_metadata(extra, pseudo)
        if cleaned != extra:
            update.update(cleaned)
    return model.model_copy(update=update) if update else model


def _pseudonymise_metadata(value: Any, pseudo: Callable[[Any], Any], identifier: bool = False) -> Any:
    """Metadata with every value under an identifier key pseudonymised, at any depth: under such a
    key, every string and number inside it (``{"user": {"email": ...}}``, ``{"emails": [...]}``).
    Until a privacy review (2026-12-02) only top-level strings and integers were, so a nested
    e-mail address, a list of them or a float phone number was stored raw."""
    if isinstance(value, dict):
        # Under an identifier key a key can be a value too (``{"phones": {"+1 415...": "mobile"}}``):
        # until a privacy review (2026-12-04) such keys were stored raw. A plain field name
        # (letters and underscores: ``email``, ``verified``) is kept so the object stays readable.
        return {
            (_identifier_key(k, pseudo) if identifier and not FIELD_NAME.fullmatch(k) else k): _pseudonymise_metadata(
                v, pseudo, identifier or bool(IDENTIFIER_KEY.search(k))
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_pseudonymise_metadata(v, pseudo, identifier) for v in value]
    if identifier and isinstance(value, str | int | float) and not isinstance(value, bool):
        return pseudo(value)
    return value


def _identifier_key(key: str, pseudo: Callable[[Any], Any]) -> str:
    """An object key under an identifier key, pseudonymised; without a key (tests) its position
    is unknown here, so it becomes a fixed placeholder (two such keys collapse into one)."""
    out = pseudo(key)
    return out if out is not None else "<redacted>"


@dataclass(frozen=True)
class LakePolicy:
    """What one lake (one sink, or one backfill output) keeps of each record.

    ``pseudonym_key`` keys the text hashes and the pseudonyms in stored logs; ``None`` (only
    in tests) stores no hashes and drops identifiers instead of pseudonymising them.
    """

    raw_text: RawText = "flagged"
    pseudonym_key: bytes | None = None
    encryption_key_b64: str | None = None

    def keeps_text(self, flagged: bool) -> bool:
        return self.raw_text == "all" or (self.raw_text == "flagged" and flagged)

    @property
    def cipher(self) -> TextCipher | None:
        return _cipher(self.encryption_key_b64) if self.encryption_key_b64 else None

    @property
    def pseudonymizer(self) -> Pseudonymizer | None:
        return Pseudonymizer(self.pseudonym_key) if self.pseudonym_key else None

    @classmethod
    def from_settings(cls, settings: Any) -> LakePolicy:
        """From a :class:`pipeline.settings.Settings` (its ``lake`` section and ``pseudonym_key``)."""
        enc = settings.lake.encryption_key
        policy = cls(
            raw_text=settings.lake.raw_text,
            pseudonym_key=settings.pseudonym_key.get_secret_value().encode("utf-8"),
            encryption_key_b64=enc.get_secret_value() if enc is not None else None,
        )
        _ = policy.cipher  # a malformed key fails at start, not at the first flagged record
        return policy


@lru_cache(maxsize=4)
def _cipher(key_b64: str) -> TextCipher:
    # Built once per process and key; the policy itself stays picklable (Spark ships it).
    return TextCipher.from_b64(key_b64)
