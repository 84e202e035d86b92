"""aesgcm serde stage: AES-GCM encryption at rest, one key per cache_salt.

Keys: `key_provider` `hkdf` derives each tenant's key from one master key, HKDF-SHA256 with the info
`lmcache-l2-aesgcm/v1` NUL `cache_salt` and `aes_bits`/8 bytes of output, so two tenants' objects are
encrypted under different keys and neither key reveals the master. The master key is read once at
start-up from `master_key_path`, which must be a regular file of at least `aes_bits`/8 bytes (at most
4 KiB) that no other user can read or write (refused otherwise: it unlocks every tenant's KV).

Each object gets a fresh 96-bit random nonce and a 16-byte tag. The stage header and the object's full
key name (model, salt, rank, group, chunk hash) are the associated data: an object moved under another
key, another tenant's object, a flipped bit anywhere, or a wrong master key all fail authentication, and
the load is a miss counted in the serde wrapper's `auth_failures`, never bytes handed to the engine.

Stage header (20 bytes): `"AG"` | version u8 | key bytes u8 | reserved u32 | nonce (12 bytes); then the
ciphertext and the tag. OpenSSL does the work through `cryptography` (encrypting into the output buffer
where the installed version has `encrypt_into`).
"""

from __future__ import annotations

import os
import stat
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import key_name
from lmcache.adapters.storage.serde_base import Alloc, SerdeAuthError, SerdeMismatchError, fresh

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = ("AesGcmSerde", "HkdfKeys", "read_master_key")

_HEADER = struct.Struct("<2sBBI12s")
_MAGIC = b"AG"
_VERSION = 1
_TAG = 16
_INFO = b"lmcache-l2-aesgcm/v1\x00"
_MAX_KEY_FILE = 4096
_MAX_SALTS = 4096  # derived keys kept; more tenants are derived again (HKDF costs microseconds)


def read_master_key(path: str, min_bytes: int) -> bytes:
    """The master key file's bytes, after checking who may read it.

    Raises:
        L2ConfigError: Missing, not a regular file, readable or writable by others, too short or too long.
    """
    try:
        info = Path(path).stat()
    except OSError as exc:
        raise L2ConfigError(f"master_key_path {path!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise L2ConfigError(f"master_key_path {path!r} is not a regular file")
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        mode = stat.S_IMODE(info.st_mode)
        raise L2ConfigError(
            f"master_key_path {path!r} is readable or writable by other users (mode {mode:04o}); chmod 600 it"
        )
    data = Path(path).read_bytes()
    if not min_bytes <= len(data) <= _MAX_KEY_FILE:
        raise L2ConfigError(
            f"master_key_path {path!r} holds {len(data)} bytes; it needs {min_bytes} to {_MAX_KEY_FILE} "
            f"(e.g. head -c 32 /dev/urandom > key)"
        )
    return data


class HkdfKeys:
    """Per-cache_salt AES keys derived from one master key (thread-safe, a bounded cache)."""

    def __init__(self, master: bytes, key_bytes: int) -> None:
        self._master = master
        self.key_bytes = key_bytes
        self._lock = threading.Lock()
        self._ciphers: dict[str, AESGCM] = {}

    def derive(self, cache_salt: str) -> bytes:
        """The key of one tenant."""
        hkdf = HKDF(algorithm=SHA256(), length=self.key_bytes, salt=None, info=_INFO + cache_salt.encode())
        return hkdf.derive(self._master)

    def cipher(self, cache_salt: str) -> AESGCM:
        """The AEAD of one tenant."""
        with self._lock:
            cipher = self._ciphers.get(cache_salt)
        if cipher is None:
            cipher = AESGCM(self.derive(cache_salt))
            with self._lock:
                if len(self._ciphers) >= _MAX_SALTS:
                    self._ciphers.pop(next(iter(self._ciphers)))
                self._ciphers[cache_salt] = cipher
        return cipher


class AesGcmSerde:
    """The aesgcm stage; see the module docstring.

    Args:
        master_key_path: The master key file.
        aes_bits: 128 or 256.
        key_provider: Only `hkdf`.
    """

    name = "aesgcm"

    def __init__(self, master_key_path: str, aes_bits: int = 128, key_provider: str = "hkdf") -> None:
        if key_provider != "hkdf":
            raise L2ConfigError(f"unsupported key_provider {key_provider!r} (only 'hkdf')")
        if aes_bits not in (128, 256):
            raise L2ConfigError(f"aes_bits must be 128 or 256 (got {aes_bits})")
        self.keys = HkdfKeys(read_master_key(master_key_path, aes_bits // 8), aes_bits // 8)

    def max_encoded_size(self, nbytes: int) -> int:
        """Header, ciphertext (as long as the plaintext) and tag."""
        return _HEADER.size + nbytes + _TAG

    def encode(self, key: ObjectKey, data: memoryview, reserve: int = 0, alloc: Alloc = fresh) -> memoryview:
        """Encrypt under the key of `key`'s cache_salt, with a fresh nonce (the caller fills `reserve`)."""
        out = alloc(reserve + self.max_encoded_size(data.nbytes))  # every byte is written below
        nonce = os.urandom(12)
        _HEADER.pack_into(out, reserve, _MAGIC, _VERSION, self.keys.key_bytes, 0, nonce)
        head = bytes(out[reserve : reserve + _HEADER.size])
        cipher = self.keys.cipher(key.cache_salt)
        aad = head + key_name(key).encode()
        body = memoryview(out)[reserve + _HEADER.size :]
        if hasattr(cipher, "encrypt_into"):
            cipher.encrypt_into(nonce, data, aad, body)
        else:  # cryptography < 45: one more copy
            body[:] = cipher.encrypt(nonce, bytes(data), aad)
        return out

    def _header(self, data: memoryview) -> bytes:
        if data.nbytes < _HEADER.size + _TAG:
            raise SerdeMismatchError("not an aesgcm serde object")
        magic, version, key_bytes, _, nonce = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise SerdeMismatchError("not an aesgcm serde object")
        if key_bytes != self.keys.key_bytes:
            raise SerdeMismatchError(
                f"object encrypted with AES-{key_bytes * 8}, not AES-{self.keys.key_bytes * 8}"
            )
        return bytes(nonce)

    def decoded_size(self, key: ObjectKey, data: memoryview) -> int:
        """The ciphertext's length (the plaintext's)."""
        self._header(data)
        return data.nbytes - _HEADER.size - _TAG

    def decode_into(self, key: ObjectKey, data: memoryview, dest: memoryview, alloc: Alloc = fresh) -> None:
        """Authenticate and decrypt into `dest`; any failure is a `SerdeAuthError`."""
        nonce = self._header(data)
        aad = bytes(data[: _HEADER.size]) + key_name(key).encode()
        cipher = self.keys.cipher(key.cache_salt)
        body = data[_HEADER.size :]
        try:
            if hasattr(cipher, "decrypt_into"):
                cipher.decrypt_into(nonce, body, aad, dest)
            else:
                dest[:] = cipher.decrypt(nonce, bytes(body), aad)
        except InvalidTag as exc:
            raise SerdeAuthError("authentication failed (wrong key or modified object)") from exc
