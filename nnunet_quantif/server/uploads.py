"""Case inputs of the server: streamed multipart uploads with a size limit, safe zip extraction, paths under
the data root, and the DICOM CT and PET series of an extracted zip or a data-root folder.

Every refusal is an :class:`InputRefused` with the HTTP status the server answers and one line naming the
file (or field) and the problem.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import QuantIFError

#: Upload fields holding files, and the file endings each accepts.
FILE_FIELDS: dict[str, tuple[str, ...]] = {"ct": (".nii.gz", ".nii", ".mha"), "pet": (".nii.gz", ".nii", ".mha"),
                                           "dicom_zip": (".zip",)}
#: Upload fields holding text.
TEXT_FIELDS: tuple[str, ...] = ("tracer",)
#: Longest text field (bytes).
MAX_TEXT_BYTES = 256
#: Most members of a DICOM zip.
MAX_ZIP_MEMBERS = 100_000

_CHUNK = 1 << 20


class InputRefused(QuantIFError):
    """A case input the server refuses; ``status`` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def too_large(what: str, limit: int) -> InputRefused:
    return InputRefused(f"{what} exceeds the server's upload limit of {limit / 1024 / 1024:g} MiB (--max-upload-mb)",
                        413)


@dataclass
class Upload:
    """What a multipart upload held: files (field -> saved path) and text fields."""

    files: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


def _ending(filename: str, name: str) -> str:
    lower = filename.lower()
    for ending in FILE_FIELDS[name]:
        if lower.endswith(ending):
            return ending
    raise InputRefused(f"upload field {name!r}: file {filename!r} is not one of {', '.join(FILE_FIELDS[name])}")


class MultipartSink:
    """Parses a ``multipart/form-data`` body fed in chunks, writing each file part to ``folder/<field><ending>``.

    Parameters
    ----------
    content_type : str
        The request's Content-Type (with its boundary).
    folder : Path
        Existing folder the files go to.
    max_bytes : int
        Largest body; :meth:`feed` raises :class:`InputRefused` (413) past it, while reading.
    """

    def __init__(self, content_type: str, folder: Path, max_bytes: int) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        kind, params = parse_options_header(content_type)
        if kind != b"multipart/form-data" or b"boundary" not in params:
            raise InputRefused(f"expected multipart/form-data with a boundary, got Content-Type {content_type!r}",
                               415)
        self.folder, self.max_bytes, self.received = folder, max_bytes, 0
        self.upload = Upload()
        self._parse_options_header = parse_options_header
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._name: str | None = None
        self._file = None
        self._text = bytearray()
        self._error: InputRefused | None = None
        callbacks = {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                     "on_header_value": self._header_value, "on_header_end": self._header_end,
                     "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                     "on_part_end": self._part_end}
        self._parser = MultipartParser(params[b"boundary"], callbacks)

    # parser callbacks (errors are kept and raised by feed, outside the parser)
    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = self._parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._name, self._text = name, bytearray()
        if self._error is not None:
            return
        if name in self.upload.files or name in self.upload.fields:
            self._error = InputRefused(f"upload field {name!r} given twice")
        elif name in FILE_FIELDS:
            if filename is None:
                self._error = InputRefused(f"upload field {name!r} must be a file")
                return
            path = self.folder / f"{name}{_ending(filename.decode('utf-8', 'replace'), name)}"
            self._file = open(path, "wb")  # noqa: SIM115 - closed in _part_end or close()
            self.upload.files[name] = path
        elif name not in TEXT_FIELDS:
            known = ", ".join([*FILE_FIELDS, *TEXT_FIELDS])
            self._error = InputRefused(f"unknown upload field {name!r} (known: {known})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._error is not None:
            return
        if self._file is not None:
            self._file.write(data[start:end])
        else:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_BYTES:
                self._error = InputRefused(f"upload field {self._name!r}: longer than {MAX_TEXT_BYTES} bytes")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name in TEXT_FIELDS and self._error is None:
            self.upload.fields[self._name] = self._text.decode("utf-8", "replace").strip()

    # ------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body.

        Raises
        ------
        InputRefused
            413 once the body exceeds the limit; 400 for a malformed body, an unknown or repeated field, or a
            file with an ending its field does not accept.
        """
        from python_multipart.exceptions import MultipartParseError

        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise too_large("the upload", self.max_bytes)
        try:
            self._parser.write(chunk)
        except InputRefused as e:
            self._error = self._error or e
        except MultipartParseError as e:
            raise InputRefused(f"malformed multipart body ({e})") from None
        if self._error is not None:
            raise self._error

    def finish(self) -> Upload:
        """End of body: the upload (every file closed)."""
        self._parser.finalize()
        self.close()
        if self._error is not None:
            raise self._error
        return self.upload

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------- zip
def _member_path(name: str) -> PurePosixPath:
    """A zip member's relative path, or :class:`InputRefused` for absolute paths and ``..``."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in p.parts:
        raise InputRefused(f"zip member {name!r}: absolute paths and '..' are refused")
    return p


def extract_zip(zip_path: Path, dest: Path, max_bytes: int) -> int:
    """Extract a zip into ``dest`` safely; returns the number of files written.

    Members with an absolute path, a ``..`` component or a symbolic link are refused, as is an archive whose
    files add up to more than ``max_bytes`` (counted while extracting, not from the headers) or that holds more
    than :data:`MAX_ZIP_MEMBERS` members.

    Raises
    ------
    InputRefused
        400 for a file that is not a zip or a refused member, 413 over the size limit.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputRefused(f"{zip_path.name}: not a readable zip file ({e})") from None
    total, n = 0, 0
    dest_resolved = dest.resolve()
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise InputRefused(f"{zip_path.name}: {len(members)} members, more than {MAX_ZIP_MEMBERS}")
        for info in members:
            rel = _member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InputRefused(f"zip member {info.filename!r}: symbolic links are refused")
            target = dest.joinpath(*rel.parts)
            if not target.resolve().is_relative_to(dest_resolved):
                raise InputRefused(f"zip member {info.filename!r}: outside the extraction folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise too_large(f"{zip_path.name} (extracted)", max_bytes)
                        out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
                raise InputRefused(f"{zip_path.name}: member {info.filename!r} cannot be extracted ({e})") from None
            n += 1
    if n == 0:
        raise InputRefused(f"{zip_path.name}: the zip holds no file")
    return n


# ---------------------------------------------------------------------- data root
def resolve_under_root(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` after resolving every symbolic link, refused unless it stays inside ``root``.

    Raises
    ------
    InputRefused
        400 for an absolute path, ``..`` or an empty path; 403 when the resolved path leaves the root (a
        symbolic link pointing out); 404 when nothing is there.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InputRefused(f"{what}: give a path relative to the server's --data-root")
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or (len(rel) > 1 and rel[1] == ":") or ".." in p.parts:
        raise InputRefused(f"{what} {rel!r}: absolute paths and '..' are refused; give a path relative to the "
                           "server's --data-root")
    root = root.resolve()
    target = Path(os.path.realpath(root.joinpath(*p.parts)))
    if not target.is_relative_to(root):
        raise InputRefused(f"{what} {rel!r}: resolves outside the server's --data-root (a symbolic link "
                           "pointing out of it)", 403)
    if not target.exists():
        raise InputRefused(f"{what} {rel!r}: no such file under the server's --data-root", 404)
    return target


# ---------------------------------------------------------------------- DICOM
@dataclass(frozen=True)
class DicomPair:
    """The CT and PET series of a DICOM case: folders and SeriesInstanceUIDs."""

    ct_dir: Path
    ct_series: str
    pet_dir: Path
    pet_series: str


def find_dicom_pair(folder: Path, pet_folder: Path | None = None, name: str = "the zip") -> DicomPair:
    """The one CT and the one PET (Modality ``PT``) series of ``folder`` (or the CT in ``folder`` and the PET in
    ``pet_folder``).

    Raises
    ------
    InputRefused
        No DICOM image series, or not exactly one CT and one PET series (the message lists what was found).
    """
    from ..dicom.series import DicomError, list_series

    try:
        series = list(list_series(folder).values())
        if pet_folder is not None:
            series_pet = list(list_series(pet_folder).values())
        else:
            series_pet = series
    except DicomError as e:
        raise InputRefused(f"{name}: {e}") from None
    cts = [s for s in series if s.modality == "CT"]
    pets = [s for s in series_pet if s.modality == "PT"]
    if len(cts) != 1 or len(pets) != 1:
        found = "; ".join(s.describe() for s in {s.uid: s for s in [*series, *series_pet]}.values())
        raise InputRefused(f"{name}: needs exactly one CT and one PET (PT) series, found {len(cts)} CT and "
                           f"{len(pets)} PET: {found}", 422)
    return DicomPair(folder, cts[0].uid, pet_folder or folder, pets[0].uid)
