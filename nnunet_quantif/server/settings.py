"""The server's settings and its API keys.

Keys come from a key file (``--api-key-file``: one key per line, blank lines and ``#`` comments skipped).
Without one, the server binds to loopback only and uses the default key file
(:func:`default_key_file`: ``$XDG_CONFIG_HOME/quantif/server.key``, else ``~/.config/quantif/server.key``),
created on first use with one random key, readable by its owner only (mode 0600), and reused afterwards, so
that a browser that stored the key keeps working across restarts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: Shortest key accepted from a key file (characters).
MIN_KEY_CHARS = 16

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_key_file(path: os.PathLike | str) -> tuple[str, ...]:
    """The keys of a key file: one per line; blank lines and lines starting with ``#`` are skipped.

    Raises
    ------
    ConfigError
        The file cannot be read, holds no key, or a key is shorter than :data:`MIN_KEY_CHARS` or has spaces.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the API key file ({e})") from None
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
            raise ConfigError(f"{p}, line {n}: an API key is one word of at least {MIN_KEY_CHARS} characters")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{p}: the API key file holds no key (one key per line)")
    return tuple(keys)


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/quantif/server.key``, else ``~/.config/quantif/server.key``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "quantif" / "server.key"


def ensure_default_key(path: os.PathLike | str | None = None) -> tuple[Path, tuple[str, ...]]:
    """The default key file and its keys; the file is created (mode 0600, one random key) when absent.

    Raises
    ------
    ConfigError
        The file exists but is readable by others than its owner, or holds no valid key.
    """
    p = Path(path) if path is not None else default_key_file()
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
        log.info("created the API key file %s (mode 0600)", p)
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{p}: the API key file is readable by others (mode {stat.S_IMODE(mode):o}); "
                          f"chmod 600 {p}")
    return p, read_key_file(p)


@dataclass
class ServerSettings:
    """What a server runs with.

    Attributes
    ----------
    api_keys : tuple of str
        The accepted keys (:data:`~nnunet_quantif.server.KEY_HEADER`). Empty: every call but ``/health`` and
        the static viewer files is refused.
    pipeline_factory : callable, optional
        Builds the pipeline (a :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` or model-set
        pipeline) on the first open. None: opening a case fails with a clear message (schema generation, tests
        of the routes that need no model).
    max_sessions : int
        Open sessions (opening or ready) at most; one more gets 503 with ``Retry-After``.
    idle_timeout_s : float
        A session unused for this long is closed and its memory freed.
    max_upload_mb : float
        Largest request body of an upload, and largest total size of a zip's extracted files (MiB).
    data_root : Path, optional
        Folder whose files may be opened by path; None: no opening by path.
    work_dir : Path, optional
        Folder for uploads and extracted zips (one sub-folder per session, removed with it). None: a
        temporary folder made at start and removed at shutdown.
    default_tracer : str
        Tracer routing of a session that names none (``auto``, ``fdg``, ``psma``, ``name``).
    lean : bool
        Memory-lean sessions (:class:`~nnunet_quantif.interactive.Session` ``lean=True``).
    retry_after_s : int
        ``Retry-After`` of a 503.
    """

    api_keys: tuple[str, ...] = ()
    pipeline_factory: Callable[[], object] | None = None
    max_sessions: int = 4
    idle_timeout_s: float = 1800.0
    max_upload_mb: float = 2048.0
    data_root: Path | None = None
    work_dir: Path | None = None
    default_tracer: str = "auto"
    lean: bool = False
    retry_after_s: int = 30

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ConfigError(f"the server needs at least 1 session (--max-sessions), got {self.max_sessions}")
        if not self.idle_timeout_s > 0:
            raise ConfigError(f"--idle-timeout must be > 0 seconds, got {self.idle_timeout_s}")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.data_root is not None:
            root = Path(self.data_root).expanduser()
            if not root.is_dir():
                raise ConfigError(f"{root}: --data-root is not a folder")
            self.data_root = root.resolve()

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes (MiB)."""
        return int(self.max_upload_mb * 1024 * 1024)
