"""Image I/O, grid checks and atomic writing.

Arrays are NumPy arrays in **array order (z, y, x)**, as SimpleITK returns them.
Geometry is kept in **image order (x, y, z)**, as SimpleITK and the NIfTI/MHA
headers store it: spacing in mm, origin in mm (physical LPS coordinates, as ITK
uses them), direction as a row-major 3 x 3 matrix of direction cosines.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import GridMismatchError, InputFileError, OverwriteInputError

#: File endings that :func:`read_image` and :func:`write_image` accept.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".mha")

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of an image.

    Attributes
    ----------
    size : tuple of int
        Number of voxels along (x, y, z).
    spacing : tuple of float
        Voxel size in mm along (x, y, z).
    origin : tuple of float
        Physical position in mm of voxel (0, 0, 0), ITK (LPS) convention.
    direction : tuple of float
        Row-major 3 x 3 direction-cosine matrix (9 values); column j is the
        physical direction of image axis j (x, y, z).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("Geometry needs 3-D size, spacing and origin and a 9-value direction")

    @staticmethod
    def to_array_order(values_xyz: Iterable[float] | np.ndarray) -> np.ndarray:
        """Per-axis values in image order (x, y, z) -> array order (z, y, x).

        ``values_xyz`` is one triple, shape (3,), or several, shape (N, 3); the last axis is reversed. A voxel
        index (x, y, z) of a click file becomes the index (z, y, x) of a (z, y, x) array.
        """
        return np.asarray(values_xyz)[..., ::-1]

    @staticmethod
    def to_image_order(values_zyx: Iterable[float] | np.ndarray) -> np.ndarray:
        """Per-axis values in array order (z, y, x) -> image order (x, y, z) (the inverse of
        :meth:`to_array_order`), shape (3,) or (N, 3)."""
        return np.asarray(values_zyx)[..., ::-1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return self.size[::-1]  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (z, y, x)."""
        return self.spacing[::-1]  # type: ignore[return-value]

    @property
    def origin_zyx(self) -> tuple[float, float, float]:
        """Physical position in mm of voxel (0, 0, 0), its components in array order (z, y, x)."""
        return self.origin[::-1]  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 ml = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a (3, 3) array; column j is image axis j (x, y, z)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        """Geometry of a 3-D SimpleITK image."""
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @classmethod
    def from_shape(cls, shape_zyx: Iterable[int], spacing_zyx: Iterable[float] = (1.0, 1.0, 1.0), **kwargs) -> Geometry:
        """Build a geometry from an array shape and spacing given in array order (z, y, x)."""
        return cls(tuple(shape_zyx)[::-1], tuple(spacing_zyx)[::-1], **kwargs)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction of ``image`` (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(d["size"], d["spacing"], d["origin"], d["direction"])

    def index_to_physical(self, index_xyz: Iterable[float]) -> np.ndarray:
        """Physical position (mm, LPS) of a continuous voxel index in (x, y, z) order."""
        idx = np.asarray(tuple(index_xyz), dtype=float)
        return np.asarray(self.origin) + self.direction_matrix @ (idx * np.asarray(self.spacing))

    def physical_to_index(self, point: Iterable[float]) -> np.ndarray:
        """Continuous voxel index in (x, y, z) order of a physical position (mm, LPS); the inverse of
        :meth:`index_to_physical`."""
        inv = np.linalg.inv(self.direction_matrix * np.asarray(self.spacing)[None, :])
        return inv @ (np.asarray(tuple(point), dtype=float) - np.asarray(self.origin))

    def nearest_index(self, point: Iterable[float]) -> np.ndarray:
        """The voxel (x, y, z), int64, nearest to a physical position (mm, LPS), clipped into the grid."""
        return np.clip(np.rint(self.physical_to_index(point)).astype(np.int64), 0, np.asarray(self.size) - 1)

    def array_index_to_physical(self, index_zyx: Iterable[float]) -> np.ndarray:
        """Physical position (mm, LPS; x, y, z) of a continuous array index (z, y, x)."""
        return self.index_to_physical(self.to_image_order(tuple(index_zyx)))

    def nearest_array_index(self, point: Iterable[float]) -> np.ndarray:
        """The voxel (z, y, x), int64, nearest to a physical position (mm, LPS; x, y, z), clipped into the grid."""
        return self.to_array_order(self.nearest_index(point))


def has_image_extension(path: PathLike) -> bool:
    """Whether ``path`` ends in one of :data:`IMAGE_EXTENSIONS`."""
    name = os.fspath(path).lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def strip_image_extension(name: str) -> str:
    """``'a b_0001.nii.gz'`` -> ``'a b_0001'``; names without a known ending are returned unchanged."""
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def image_extension(path: PathLike) -> str:
    """The known image ending of ``path`` (``'.nii.gz'``, ``'.nii'`` or ``'.mha'``)."""
    name = os.fspath(path).lower()
    for ext in IMAGE_EXTENSIONS:
        if name.endswith(ext):
            return ext
    raise InputFileError(f"{path}: unsupported image format (expected one of {', '.join(IMAGE_EXTENSIONS)})")


def find_image(folder: PathLike, stem: str) -> Path | None:
    """The file ``folder/stem<ext>`` for the first ending in :data:`IMAGE_EXTENSIONS` that exists, else None."""
    for ext in IMAGE_EXTENSIONS:
        candidate = Path(folder) / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def check_image_complete(path: PathLike) -> None:
    """Raise :class:`InputFileError` if an image file holds less voxel data than its header says.

    SimpleITK reads a truncated NIfTI file without complaint and fills the missing voxels
    with 0. The header gives the expected size (data offset + voxels x bytes per voxel);
    a ``.nii`` file must be at least that long, and a ``.nii.gz`` file's gzip trailer must
    record that uncompressed size (``.mha``: the data after the text header must be as long
    as the header says). Only when the trailer disagrees is the stream fully
    decompressed (which also catches a corrupt stream), so the check is O(1) for good files.
    """
    import gzip
    import zlib

    import nibabel as nib

    p = Path(path)
    ext = image_extension(p)
    if ext == ".mha":
        _check_mha_complete(p)
        return
    opener = gzip.open if ext == ".nii.gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read(540)  # a NIfTI-2 header; NIfTI-1 uses the first 348 bytes
    except (EOFError, OSError, zlib.error) as e:
        raise InputFileError(f"{p}: cannot read image (truncated or corrupt NIfTI header: "
                             f"{type(e).__name__}: {e})") from None
    sizeof_hdr = {int.from_bytes(raw[:4], order) for order in ("little", "big")} if len(raw) >= 4 else set()
    klass = nib.Nifti1Header if 348 in sizeof_hdr else nib.Nifti2Header if 540 in sizeof_hdr else None
    try:
        header = klass.from_fileobj(io.BytesIO(raw), check=False) if klass is not None else None
    except Exception:  # nibabel raises several types for a damaged header
        header = None
    if header is None:
        raise InputFileError(f"{p}: cannot read image (not a NIfTI file: no NIfTI-1 or NIfTI-2 header)")
    expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
        int(header.get_data_dtype().itemsize)
    if ext == ".nii":
        actual = p.stat().st_size
    else:
        with open(p, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        if isize == expected % 2 ** 32:
            return
        actual = 0
        try:
            with gzip.open(p) as g:
                while chunk := g.read(1 << 22):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error) as e:
            raise InputFileError(f"{p}: cannot read image (truncated or corrupt gzip stream: {type(e).__name__}: "
                                 f"{e}; the header needs {expected} bytes of image data)") from None
    if actual < expected:
        raise InputFileError(f"{p}: cannot read image (truncated file: the header needs {expected} bytes "
                             f"of image data, the file holds {actual})")


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_mha_complete(p: Path) -> None:
    """The ``.mha`` part of :func:`check_image_complete`: the data after the text header must be as long as the
    header says (``CompressedDataSize``, or voxels x channels x bytes per element)."""
    fields: dict[str, str] = {}
    with open(p, "rb") as f:
        for _ in range(64):  # a MetaImage header is a few dozen "Key = value" lines ending with ElementDataFile
            line = f.readline(4096)
            if not line:
                break
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        header_bytes = f.tell()
    if fields.get("ElementDataFile") != "LOCAL":
        return  # detached or unknown layout: left to ITK
    try:
        if fields.get("CompressedData", "False").lower() == "true":
            expected = int(fields["CompressedDataSize"]) if "CompressedDataSize" in fields else None
        else:
            voxels = int(np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.int64))
            expected = voxels * int(fields.get("ElementNumberOfChannels", "1")) * _MET_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return  # a header ITK may still understand; it reports its own errors
    actual = p.stat().st_size - header_bytes
    if expected is not None and actual < expected:
        raise InputFileError(f"{p}: cannot read image (truncated file: the header needs {expected} bytes "
                             f"of image data, the file holds {actual})")


def _itk_reason(error: RuntimeError) -> str:
    """The informative part of an ITK exception ("ITK ERROR: ..." and "Reason: ..."), on one line."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    useful = [re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", ln) for ln in lines[1:]] or lines[:1]
    return "; ".join(useful) if useful else "unknown reader error"


def read_sitk(path: PathLike) -> sitk.Image:
    """Read a 3-D image with SimpleITK, raising :class:`InputFileError` on any problem
    (a missing, unreadable, truncated or non-3-D-scalar file)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: file not found")
    ext = image_extension(p)
    check_image_complete(p)
    try:
        if p.name.endswith(ext):
            image = sitk.ReadImage(str(p))
        else:  # an upper- or mixed-case ending, which ITK's NIfTI reader refuses: read through a lower-case link
            with tempfile.TemporaryDirectory(prefix="quantif-read-") as d:
                link = Path(d) / f"image{ext}"
                os.symlink(p.absolute(), link)
                image = sitk.ReadImage(str(link))
    except RuntimeError as e:
        raise InputFileError(f"{p}: cannot read image ({_itk_reason(e)})") from None
    if image.GetDimension() != 3:
        raise InputFileError(f"{p}: expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputFileError(f"{p}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    return image


def read_image(path: PathLike, dtype: np.dtype | type | None = None,
               keep_nonfinite: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read an image as an array plus its geometry.

    Parameters
    ----------
    path : path-like
        A ``.nii.gz``, ``.nii`` or ``.mha`` file.
    dtype : numpy dtype, optional
        Cast the array to this type.
    keep_nonfinite : bool
        SimpleITK's NIfTI reader silently turns NaN and Inf voxels into 0. With
        True, float NIfTI files are read a second time through nibabel and the
        non-finite voxels are put back, so that callers (PET validation) can see
        them. MHA files keep NaN/Inf anyway.

    Returns
    -------
    array : np.ndarray, shape (z, y, x)
    geometry : Geometry
    """
    image = read_sitk(path)
    arr = sitk.GetArrayFromImage(image)
    if keep_nonfinite and np.issubdtype(arr.dtype, np.floating) and image_extension(path) != ".mha":
        _restore_nonfinite_nifti(path, arr)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr, Geometry.from_sitk(image)


#: What a PET reader does with NaN/Inf voxels: refuse the file, or treat them as SUV 0 (``--replace-nonfinite``).
NONFINITE_MODES: tuple[str, ...] = ("raise", "zero")


def read_pet(path: PathLike, nonfinite: str = "raise") -> tuple[np.ndarray, Geometry]:
    """Read a PET (SUV) image as float32 with the one NaN/Inf policy of every command.

    NaN and Inf voxels are seen in both formats (SimpleITK would read them as 0 from NIfTI);
    then ``nonfinite='raise'`` refuses the file and ``'zero'`` sets them to SUV 0, so ``.nii.gz``
    and ``.mha`` give the same result.

    Returns
    -------
    pet : np.ndarray, shape (z, y, x), float32 (SUV)
    geometry : Geometry

    Raises
    ------
    InvalidSUVError
        Non-finite voxels with ``nonfinite='raise'`` (the message names the file and the flag).
    """
    check_nonfinite_mode(nonfinite)
    pet, geometry = read_image(path, keep_nonfinite=True)
    pet = replace_nonfinite(pet.astype(np.float32, copy=False), nonfinite, str(path),
                            "pass --replace-nonfinite to treat them as SUV 0")
    return pet, geometry


def check_nonfinite_mode(nonfinite: str) -> None:
    """Raise ValueError unless ``nonfinite`` is one of :data:`NONFINITE_MODES`."""
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")


#: The end of the NaN/Inf message for an array given in Python.
_NONFINITE_HINT = "use nonfinite='zero' (CLI: --replace-nonfinite) to treat them as SUV 0"


def replace_nonfinite(pet: np.ndarray, nonfinite: str, source: str, hint: str = _NONFINITE_HINT) -> np.ndarray:
    """The NaN/Inf policy on a PET array (any shape): ``'raise'`` refuses NaN/Inf voxels, ``'zero'`` sets them to 0.

    Returns ``pet`` itself when it holds none (or is not floating point), else a copy of the same dtype.

    Raises
    ------
    InvalidSUVError
        Non-finite voxels with ``nonfinite='raise'``; the message names ``source`` and ends with ``hint``.
    """
    from .errors import InvalidSUVError

    if not np.issubdtype(pet.dtype, np.floating):
        return pet
    finite = np.isfinite(pet)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if not n_bad:
        return pet
    if nonfinite == "raise":
        raise InvalidSUVError(f"{source}: PET holds {n_bad} non-finite voxel(s) (NaN/Inf); {hint}")
    return np.where(finite, pet, 0).astype(pet.dtype, copy=False)


def _restore_nonfinite_nifti(path: PathLike, arr: np.ndarray) -> None:
    """Put back into ``arr`` (z, y, x) the NaN/Inf voxels that SimpleITK zeroed when reading a NIfTI file."""
    import nibabel as nib

    raw = np.asarray(nib.load(os.fspath(path)).dataobj)  # stored order (x, y, z)
    if raw.ndim != 3:
        return
    bad = ~np.isfinite(raw)
    if bad.any():
        bad_zyx = bad.T
        if bad_zyx.shape == arr.shape:
            arr[bad_zyx] = raw.T[bad_zyx]


def read_geometry(path: PathLike) -> Geometry:
    """Read only the header of an image (no voxel data)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputFileError(f"{p}: cannot read image header ({str(e).strip().splitlines()[0]})") from None
    if reader.GetDimension() != 3:
        raise InputFileError(f"{p}: expected a 3-D image, got {reader.GetDimension()}-D")
    return Geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Wrap a (z, y, x) array into a SimpleITK image with ``geometry``."""
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} (z, y, x) does not match geometry shape {geometry.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return geometry.apply_to(sitk.GetImageFromArray(array))


def _same_file(a: PathLike, b: PathLike) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies at or below ``folder`` (resolved)."""
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def ensure_not_input(target: PathLike, inputs: Iterable[PathLike] = (),
                     input_folders: Iterable[PathLike] = ()) -> None:
    """Raise :class:`OverwriteInputError` if ``target`` is one of ``inputs``, or lies in one of ``input_folders``.

    Parameters
    ----------
    target : path-like
        The output.
    inputs : iterable of path-like
        Input files (the same file under another name or through a link counts).
    input_folders : iterable of path-like
        Input folders, such as DICOM series folders: the output must not lie inside one (a file written
        there would join the series on the next read), nor be any file under it (through a hard or
        symbolic link).
    """
    for inp in inputs:
        if inp is not None and _same_file(target, inp):
            raise OverwriteInputError(f"{target}: refusing to overwrite the input file {inp}")
    t = Path(target)
    for folder in input_folders:
        if folder is None or not Path(folder).is_dir():
            continue
        if _inside(t, Path(folder)):
            raise OverwriteInputError(f"{target}: refusing to write inside the input folder {folder}")
        if t.exists():
            for f in Path(folder).rglob("*"):
                if f.is_file() and _same_file(t, f):
                    raise OverwriteInputError(f"{target}: refusing to overwrite {f} of the input folder {folder}")


def check_output_path(path: PathLike, *, image: bool = False, folder: bool = False,
                      inputs: Iterable[PathLike] = (), input_folders: Iterable[PathLike] = ()) -> Path:
    """Check, before any long work, that ``path`` can be written as an output.

    Parameters
    ----------
    path : path-like
        The output file (or, with ``folder``, the output folder).
    image : bool
        The file must have a known image ending (``.nii.gz``, ``.nii``, ``.mha``, any case).
    folder : bool
        ``path`` is an output folder: it must not be an existing file.
    inputs : iterable of path-like
        Input paths the output must not overwrite.
    input_folders : iterable of path-like
        Input folders (DICOM series folders) the output must not lie in (:func:`ensure_not_input`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputPathError
        ``path`` is an existing folder (file outputs) or file (folder outputs), has an unknown
        image ending, is a symbolic link leading out of its folder (:func:`atomic_write`), or the
        nearest existing folder above it is not a writable folder.
    OverwriteInputError
        ``path`` is one of ``inputs``, or lies in one of ``input_folders``.
    """
    from .errors import OutputPathError

    target = Path(path)
    if folder:
        if target.exists() and not target.is_dir():
            raise OutputPathError(f"{target}: output folder is an existing file")
    else:
        if target.is_dir():
            raise OutputPathError(f"{target}: output path is an existing folder, not a file")
        if target.exists() and not target.is_file():
            raise OutputPathError(f"{target}: output path is an existing device, FIFO or socket, not a regular file")
        if image and not has_image_extension(target):
            raise OutputPathError(f"{target}: unknown output image ending (use one of {', '.join(IMAGE_EXTENSIONS)})")
        ensure_not_input(target, inputs, input_folders)
        if target.is_symlink() and Path(os.path.realpath(target)).parent != Path(os.path.realpath(target.parent)):
            raise OutputPathError(f"{target}: output is a symbolic link to {os.path.realpath(target)}, outside the "
                                  "output's folder; refusing to write through it (name that file as the output "
                                  "instead)")
    parent = target if folder else target.parent
    parent = parent.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{target}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{target}: folder {parent} is not writable")
    return target


def _current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(target: PathLike, inputs: Iterable[PathLike] = (), input_folders: Iterable[PathLike] = (),
                 link_targets: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path in the target's folder, then rename it.

    The temporary name ends with the target's name, so writers that choose the
    format by the file ending (SimpleITK) behave the same. If the block raises,
    the temporary file is removed and the target is left as it was.

    A ``target`` that is a symbolic link is written through (the link is kept) when the file it
    points to lies in the link's own folder, or is one of ``link_targets``; a link that leads out
    of its folder is refused, so a planted link cannot redirect an output elsewhere.

    Parameters
    ----------
    target : path-like
        Final path. Its folder is created if needed.
    inputs : iterable of path-like
        Paths that must never be overwritten; naming one as ``target`` raises
        :class:`OverwriteInputError` before anything is written.
    input_folders : iterable of path-like
        Folders the target must not lie in (:func:`ensure_not_input`).
    link_targets : iterable of path-like
        Files the user named, which a symbolic link ``target`` may lead to outside its folder.
    """
    from .errors import OutputPathError

    target = Path(target)
    ensure_not_input(target, inputs, input_folders)
    if target.is_symlink():
        real = Path(os.path.realpath(target))
        allowed = {Path(os.path.realpath(p)) for p in link_targets}
        if real.parent != Path(os.path.realpath(target.parent)) and real not in allowed:
            raise OutputPathError(f"{target}: output is a symbolic link to {real}, outside the output's folder; "
                                  "refusing to write through it (name that file as the output instead)")
        target = real  # write through the link, keep the link
        ensure_not_input(target, inputs, input_folders)
    if target.exists() and not target.is_file():
        kind = "folder" if target.is_dir() else "device, FIFO or socket"
        raise OutputPathError(f"{target}: output path is an existing {kind}, not a regular file; "
                              "refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix="-" + target.name, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_image(array: np.ndarray, geometry: Geometry, path: PathLike, inputs: Iterable[PathLike] = (),
                compress: bool = True) -> Path:
    """Write a (z, y, x) array with ``geometry`` to ``path`` atomically.

    The format follows the ending (``.nii.gz``, ``.nii``, ``.mha``).
    ``inputs`` are paths that must not be overwritten.
    """
    path = Path(path)
    ext = image_extension(path)
    image = to_sitk(np.ascontiguousarray(array), geometry)
    with atomic_write(path, inputs) as tmp:
        # ITK's NIfTI writer refuses upper- or mixed-case endings (a.NII.GZ): write a lower-case name, then rename
        lower = tmp.with_name(tmp.name[: -len(ext)] + ext)
        try:
            sitk.WriteImage(image, str(lower), useCompression=compress)
            if lower != tmp:
                os.replace(lower, tmp)
        finally:
            if lower != tmp:
                with contextlib.suppress(FileNotFoundError):
                    lower.unlink()
    return path


def write_json(obj: object, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_write(path, inputs) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


def write_text(text: str, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_write(path, inputs) as tmp:
        tmp.write_text(text)
    return path


def check_same_grid(a: Geometry, b: Geometry, name_a: str = "image A", name_b: str = "image B",
                    rtol: float = 1e-5, atol_mm: float = 1e-3) -> None:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` describe the same voxel grid.

    The message names both images and the first differing field (size,
    spacing, origin or direction) with both values.

    Parameters
    ----------
    a, b : Geometry
    name_a, name_b : str
        How to name the images in the message (usually their file paths).
    rtol : float
        Relative tolerance on spacing and direction.
    atol_mm : float
        Absolute tolerance in mm on spacing and origin.
    """
    if a.size != b.size:
        field = "size"
    elif not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=atol_mm):
        field = "spacing"
    elif not np.allclose(a.origin, b.origin, rtol=0, atol=max(atol_mm, 1e-3 * min(a.spacing))):
        field = "origin"
    elif not np.allclose(a.direction, b.direction, rtol=0, atol=1e-4):
        field = "direction"
    else:
        return
    va, vb = getattr(a, field), getattr(b, field)

    def fmt(v: tuple[float, ...]) -> str:
        return "(" + ", ".join(f"{x:g}" for x in v) + ")"

    raise GridMismatchError(
        f"{name_a} and {name_b} are not on the same grid: {field} differs ({fmt(va)} vs {fmt(vb)})"
    )


#: The CT must cover at least this fraction of the PET's physical extent along each patient axis (x, y, z) to
#: be resampled onto or paired with it. Half leaves room for a CT reconstructed with a smaller in-plane field
#: of view than the PET and for a shorter CT range, and refuses a CT that misses the PET.
MIN_CT_OVERLAP = 0.5


def physical_bounds(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box (mm, LPS, (x, y, z)) spanned by the voxels of ``geometry``, voxel edges included.

    Returns
    -------
    low, high : np.ndarray, shape (3,)
    """
    size = np.asarray(geometry.size, dtype=float)
    corners = np.array([[-0.5 + c[i] * size[i] for i in range(3)] for c in np.ndindex(2, 2, 2)])
    points = np.array([geometry.index_to_physical(c) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def ct_pet_overlap(ct: Geometry, pet: Geometry) -> np.ndarray:
    """Per patient axis (x, y, z), the fraction of the PET's physical extent that the CT's box covers (0 to 1)."""
    c_lo, c_hi = physical_bounds(ct)
    p_lo, p_hi = physical_bounds(pet)
    covered = np.clip(np.minimum(c_hi, p_hi) - np.maximum(c_lo, p_lo), 0.0, None)
    return covered / np.maximum(p_hi - p_lo, 1e-9)


def check_ct_matches_pet(ct: Geometry, pet: Geometry, ct_name: str = "CT", pet_name: str = "PET", *,
                         ct_ids: dict[str, str] | None = None, pet_ids: dict[str, str] | None = None,
                         ignore: bool = False, min_overlap: float = MIN_CT_OVERLAP) -> list[str]:
    """Check that a CT belongs to its PET before it is resampled onto it or paired with it.

    Parameters
    ----------
    ct, pet : Geometry
    ct_name, pet_name : str
        How to name the images in the message (paths).
    ct_ids, pet_ids : dict, optional
        Header identifiers, e.g. ``{"PatientID": ..., "FrameOfReferenceUID": ...}``; a key is compared
        only where both headers give a non-empty value (NIfTI and MHA files give none).
    ignore : bool
        Log each mismatch as a warning and go on (``--ignore-ct-mismatch``) instead of raising.
    min_overlap : float
        Fraction of the PET's extent the CT must cover along each axis (:data:`MIN_CT_OVERLAP`).

    Returns
    -------
    list of str
        The mismatches found (empty when the CT matches), for the command's record.

    Raises
    ------
    CtPetMismatchError
        Without ``ignore``: one line naming both images and each differing value.
    """
    import logging

    from .errors import CtPetMismatchError

    problems = []
    for key in sorted(set(ct_ids or {}) & set(pet_ids or {})):
        a, b = str((ct_ids or {})[key] or "").strip(), str((pet_ids or {})[key] or "").strip()
        if a and b and a != b:
            problems.append(f"{key} differs (CT {a!r}, PET {b!r})")
    fractions = ct_pet_overlap(ct, pet)
    if np.any(fractions < min_overlap):
        c_lo, c_hi = physical_bounds(ct)
        p_lo, p_hi = physical_bounds(pet)
        axis = int(np.argmin(fractions))
        name = "xyz"[axis]
        problems.append(f"the CT covers {100 * fractions[axis]:.0f} % of the PET's extent along {name} (CT "
                        f"{c_lo[axis]:.1f} to {c_hi[axis]:.1f} mm, PET {p_lo[axis]:.1f} to {p_hi[axis]:.1f} mm; "
                        f"at least {100 * min_overlap:.0f} % needed)")
    if not problems:
        return []
    message = f"CT {ct_name} does not match PET {pet_name}: " + "; ".join(problems)
    if not ignore:
        raise CtPetMismatchError(message + " (give --ignore-ct-mismatch to use this CT anyway)")
    logging.getLogger(__name__).warning("%s; used anyway (--ignore-ct-mismatch)", message)
    return problems
