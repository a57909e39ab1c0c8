"""Where compiled engines are cached, and the checks that keep a cache from running someone else's code.

A TensorRT engine plan or an OpenVINO compiled blob is executable: whoever can write the cache folder chooses what
runs. So caches live in a per-user folder (``$XDG_CACHE_HOME/vlt_perception``, else ``~/.cache/vlt_perception``,
mode 0700), and any cache folder, default or given, must belong to the current user and be writable by nobody
else. Cache entries are signed with a per-user key kept in that folder (HMAC-SHA256), so an engine and sidecar
copied in from elsewhere (a model archive, a shared drive) are never taken for this user's own build.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from vlt_perception.engines.base import EngineError

APP = "vlt_perception"
KEY_FILE = "cache.key"


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/vlt_perception`` (when set to an absolute path, as the XDG spec requires), else
    ``~/.cache/vlt_perception``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / APP


def expand(path: str | os.PathLike) -> Path:
    """``~`` and ``~user`` expanded (a literal ``./~`` folder is never what was meant)."""
    return Path(os.path.expanduser(os.fspath(path)))


def check_private(path: Path, what: str) -> None:
    """EngineError naming ``path`` unless it belongs to the current user and neither group nor others can write
    it (following symbolic links, as every later open does)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise EngineError(f"{path}: {what} cannot be read: {exc}") from exc
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise EngineError(f"{path}: {what} belongs to another user (uid {info.st_uid}); a cached engine is code "
                          "that runs as you: use a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EngineError(f"{path}: {what} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); a cached "
                          f"engine is code that runs as you: `chmod go-w {path}` or use another folder")


def cache_folder(cache_dir: str | os.PathLike | None = None, sub: str = "") -> Path:
    """The cache folder to use, created (mode 0700) when missing and checked with :func:`check_private`:
    ``cache_dir`` (``~`` expanded) or ``default_cache_root() / sub``."""
    folder = expand(cache_dir) if cache_dir else default_cache_root() / sub
    if not folder.exists():
        try:
            folder.mkdir(parents=True, mode=0o700)
            folder.chmod(0o700)  # mkdir's mode is filtered through the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise EngineError(f"{folder}: cannot create the engine cache folder: {exc}") from exc
    if not folder.is_dir():
        raise EngineError(f"{folder}: engine cache folder is not a directory")
    check_private(folder, "engine cache folder")
    return folder


def _user_key() -> bytes:
    """The per-user signing key (32 random bytes in ``default_cache_root()/cache.key``, mode 0600), created on
    first use."""
    root = cache_folder()
    path = root / KEY_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    check_private(path, "engine cache key")
    key = path.read_bytes()
    if len(key) != 32:
        raise EngineError(f"{path}: engine cache key has {len(key)} bytes, expected 32; delete it (cached engines "
                          "are then rebuilt)")
    return key


def sign(entry: dict) -> str:
    """HMAC-SHA256 (hex) of a cache entry (its JSON, keys sorted, without ``signature``) under the user's key."""
    payload = json.dumps({k: v for k, v in entry.items() if k != "signature"}, sort_keys=True).encode()
    return hmac.new(_user_key(), payload, hashlib.sha256).hexdigest()


def signed_by_this_user(entry: dict) -> bool:
    """Whether ``entry['signature']`` is this user's signature of the entry."""
    signature = entry.get("signature")
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(entry))
