"""Reading untrusted text files: a file that is not UTF-8 (or cannot be read) is an
:class:`~synthloop.errors.InputError` naming it, never a ``UnicodeDecodeError`` traceback."""

from __future__ import annotations

from pathlib import Path

from synthloop.errors import InputError


def read_text(path: str | Path) -> str:
    """The text of ``path``, decoded as UTF-8.

    Raises:
        InputError: naming ``path``: missing, unreadable, or not UTF-8 (with the byte offset).
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", file=path) from None
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except OSError as e:
        raise InputError(f"cannot read the file ({e.strerror or e})", file=path) from None


__all__ = ["read_text"]
