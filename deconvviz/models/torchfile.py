"""Reading files written by ``torch.save``, safely, with one line in our words when it fails.

Every file deconvviz reads with :func:`torch.load` (checkpoints, state dicts, a
report's saved scan state) goes through :func:`read_torch_file`: it loads with
``weights_only=True``, so no pickled code ever runs, and when the file is not
what was expected it says what the file is instead (empty, text, truncated, a
zip or pickle that ``torch.save`` did not write, a pickle that asks to import and
call Python objects). It never repeats torch's message, whose advice is to load
the file unsafely.
"""

from __future__ import annotations

import io
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Union

from ..errors import DeconvvizError

__all__ = ["read_torch_file", "TorchFileError"]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


class TorchFileError(DeconvvizError):
    """A file :func:`read_torch_file` could not load: ``path``, ``expected`` (what the
    caller wanted) and ``why`` (what the file is instead), each for messages of callers
    that word the line their own way."""

    def __init__(self, path: Path, expected: str, why: str):
        super().__init__(f"{path} is not {expected}: {why}")
        self.path, self.expected, self.why = path, expected, why


def read_torch_file(path: Union[str, Path], expected: str) -> Any:
    """The object in a file written by ``torch.save``, loaded with ``weights_only=True``.

    ``expected`` names what the caller wants, for the message ("a deconvviz
    checkpoint", "a state dict"). A missing, unreadable or unloadable file raises
    a one-line :class:`~deconvviz.errors.DeconvvizError` that names the file,
    what was expected and what the file is instead; torch's own text (which
    advises loading untrusted files with ``weights_only=False``) never reaches
    the user, and neither do its warnings.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise DeconvvizError(f"{path} does not exist (expected {expected})")
    if path.is_dir():
        raise TorchFileError(path, expected, "it is a folder")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols and asks for bug reports on odd files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise TorchFileError(
            path, expected, f"it cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    except Exception:  # noqa: BLE001 - every failure is described from the file itself
        raise TorchFileError(path, expected, _what_it_is(path)) from None


def _what_it_is(path: Path) -> str:
    """Why torch could not load ``path``, found by looking at the bytes (nothing is run)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if not data:
        return "the file is empty"
    if data.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not pickles:
                    return "it is a zip archive that torch.save did not write"
                data = archive.read(pickles[0])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "it is damaged or truncated (a torch.save zip archive without its end)"
        return _pickle_verdict(data, damaged="its pickled data is damaged")
    if data[0] == _PICKLE_PROTO:
        return _pickle_verdict(
            data, damaged="it is damaged or truncated (a pickle without its end)"
        )
    if _is_text(data[:4096]):
        return "it is a text file, not one written by torch.save"
    return "it is not a file written by torch.save (or it is damaged)"


def _pickle_verdict(data: bytes, damaged: str) -> str:
    imports = _pickle_imports(data)
    if imports is None:
        return damaged
    # torch.save's own pickles import torch's tensor rebuilders and OrderedDict only
    foreign = [n for n in imports if not n.startswith(("torch.", "collections.OrderedDict"))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return (
            f"it is a pickle that imports Python objects ({shown}); deconvviz "
            "loads only tensors and plain values and never runs code from a file"
        )
    return "it is a pickle that torch.save did not write (or it is damaged)"


def _pickle_imports(data: bytes) -> Union[List[str], None]:
    """``module.name`` of every object a pickle would import, in order (without running it);
    None if the pickle is cut short or malformed."""
    names: List[str] = []
    strings: List[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
            if op.name == "STOP":
                break
        else:
            return None
    except Exception:  # noqa: BLE001 - a malformed pickle is damaged, whatever genops says
        return None
    return list(dict.fromkeys(names))


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)
