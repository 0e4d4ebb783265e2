"""Training of the MIP-CNN tracer discriminator with k-fold cross-validation.

Data: PET volumes named ``*_0001.nii.gz`` / ``.nii`` / ``.mha`` anywhere under a
folder (e.g. ``imagesTr/``); the tracer comes from a CSV (``--tracer-csv``) or the
case-name prefix (``fdg_...`` / ``psma_...``). Each volume is read and turned into
its MIP once (optionally cached on disk); the folds only reuse the MIPs.

Folds are stratified by tracer and drawn from ``seed``. For each fold a fresh
network of architecture ``arch`` (:func:`~nnunet_quantif.tracer.model.build_model`:
``"quantif"``, the project's :class:`~nnunet_quantif.tracer.model.MIPCNN`, or
``"authors"``, the authors' network on their raw-SUV input) is trained for a fixed
number of epochs (no early stopping, so the held-out fold never steers training)
with Adam, a cosine learning-rate schedule, ``BCEWithLogitsLoss`` and light
augmentation of the 2-D MIPs: intensity scaling (log-uniform factor in [0.8, 1.25];
re-clipped to [0, 1] for the "quantif" input, not clipped for raw SUV), shifts of
up to 10 pixels per axis (zero fill) and left-right flips (probability 0.5). The
fold's accuracy is measured on its held-out cases. (The authors published no
training code for their network; both architectures are trained by this loop.)

Determinism: for a given seed, data and ``threads``, training on CPU gives the
same weights bit for bit. Every random draw comes from explicitly seeded
generators (NumPy for the folds, one ``torch.Generator`` per fold for order and
augmentation, ``torch.manual_seed`` for the initial weights and dropout);
``torch.use_deterministic_algorithms(True)`` and ``torch.set_num_threads(threads)``
are set while training and restored afterwards; no DataLoader workers are used.

Output folder: ``fold_<k>.pt`` (a dict with ``state_dict``, the fold number and
``arch``) for k = 0 .. folds-1, and ``tracer_meta.json`` (written last) with
``arch``, the input specification, architecture, package version, seed, folds,
per-fold and mean CV accuracy and the out-of-fold probability of every case. The
folder is self-describing: prediction reads ``arch`` and uses that input and vote.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..errors import DatasetError, TracerError
from ..io import IMAGE_EXTENSIONS, PathLike, atomic_write, read_image, strip_image_extension, write_json
from ..layout import PET_CHANNEL, channel_suffix, split_channel
from ..tracers import TRACERS, read_tracer_csv, tracer_from_name
from .model import ARCHITECTURES, MIPCNN, AuthorsMIPCNN, build_model
from .preprocessing import INPUT_SPECS, TRAINABLE_ARCHES, check_arch, mip_from_pet

logger = logging.getLogger(__name__)


#: Class names; index 1 (PSMA) is the positive class of the sigmoid output.
#: Name of the metadata file in a weights folder.
META_NAME: str = "tracer_meta.json"
#: Version of the metadata layout; :func:`load_tracer_ensemble` refuses other versions.
META_SCHEMA: int = 1
#: Largest shift (pixels, per axis) of the shift augmentation.
MAX_SHIFT: int = 10
#: How each architecture's folds vote and how a tie between folds is settled (stored in the metadata).
DECISIONS: dict[str, str] = {
    "quantif": "a fold votes psma if P(PSMA) >= 0.5; majority vote over folds; a tie goes to the mean probability "
               "(>= 0.5 -> psma)",
    "authors": "a fold votes psma if P(PSMA) > 0.5 (torch.round); majority vote over folds; a tie goes to fdg",
    "birth": "one model: psma if P(PSMA) > 0.5 (sigmoid(logit) > 0.5), else fdg",
}


def fold_votes_psma(probability: np.ndarray | float, arch: str = "quantif") -> np.ndarray:
    """Whether a fold with P(PSMA) = ``probability`` votes psma: >= 0.5, or > 0.5 for ``arch="authors"`` and
    ``arch="birth"``."""
    p = np.asarray(probability, dtype=float)
    return p > 0.5 if arch in ("authors", "birth") else p >= 0.5


def _trainable(arch: str) -> str:
    """``arch`` if this module trains it (:data:`~.preprocessing.TRAINABLE_ARCHES`), else :class:`TracerError`."""
    if check_arch(arch) not in TRAINABLE_ARCHES:
        raise TracerError(f"tracer architecture {arch!r} is imported, not trained here (train one of "
                          f"{', '.join(TRAINABLE_ARCHES)})")
    return arch


def fold_file_name(k: int) -> str:
    """``fold_<k>.pt``."""
    return f"fold_{k}.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all stored in the metadata)."""

    folds: int = 5
    epochs: int = 30
    seed: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    threads: int = 1
    arch: str = "quantif"

    def as_dict(self) -> dict:
        return {"folds": self.folds, "epochs": self.epochs, "seed": self.seed, "batch_size": self.batch_size,
                "lr": self.lr, "weight_decay": self.weight_decay, "threads": self.threads, "arch": self.arch,
                "optimizer": "Adam + cosine LR", "loss": "BCEWithLogitsLoss",
                "augmentation": {"intensity_scale": [0.8, 1.25], "clip_to_unit": self.arch != "authors",
                                 "max_shift_px": MAX_SHIFT, "lr_flip_p": 0.5}}


@dataclass
class TracerTrainingResult:
    """What :func:`train_tracer` / :func:`train_from_mips` produced."""

    out_dir: Path
    fold_accuracy: list[float]
    cv_accuracy: float
    fold_files: list[Path]
    meta_path: Path
    oof_probability: list[float] = field(default_factory=list)  # out-of-fold P(PSMA), in input order
    cases: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- data discovery

def case_name(path: PathLike) -> str:
    """``'.../psma_x_0001.nii.gz'`` -> ``'psma_x'`` (channel suffix and extension removed)."""
    parsed = split_channel(Path(path).name)
    if parsed is not None and parsed[1] == PET_CHANNEL:
        return parsed[0]
    return strip_image_extension(Path(path).name)


def _normalise_tracer(value: str, where: str) -> str:
    v = value.strip().lower()
    if v not in TRACERS:
        raise DatasetError(f"{where}: unknown tracer {value!r} (expected fdg or psma)")
    return v


def find_pet_files(data_dir: PathLike) -> list[Path]:
    """PET volumes (``*_0001`` + image ending) in ``data_dir`` and its sub-folders, sorted by relative path.

    Raises :class:`DatasetError` if the folder is missing, holds no PET, or two
    files share one case name.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found")
    suffix = channel_suffix(PET_CHANNEL)
    endings = tuple(suffix + ext for ext in IMAGE_EXTENSIONS)
    files = sorted((p for p in root.rglob(f"*{suffix}*") if p.is_file() and p.name.lower().endswith(endings)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DatasetError(f"{root}: no PET volumes (*{suffix} with one of {', '.join(IMAGE_EXTENSIONS)}) found")
    seen: dict[str, Path] = {}
    for f in files:
        c = case_name(f)
        if c in seen:
            raise DatasetError(f"{f}: case {c!r} also found as {seen[c]}")
        seen[c] = f
    return files


def label_files(files: Sequence[Path], tracer_csv: PathLike | None = None) -> list[str]:
    """Tracer of each PET file: from the CSV if given (it must list every case), else the name prefix."""
    table = read_tracer_csv(tracer_csv) if tracer_csv is not None else None
    tracers = []
    for f in files:
        c = case_name(f)
        if table is not None:
            if c not in table:
                raise DatasetError(f"{f}: case {c!r} is not listed in the tracer CSV {tracer_csv}")
            tracers.append(table[c])
        else:
            t = tracer_from_name(c)
            if t is None:
                raise DatasetError(f"{f}: cannot tell the tracer from the name (expected an fdg_ or psma_ prefix, "
                                   "or give --tracer-csv)")
            tracers.append(t)
    return tracers


def _cache_key(path: Path, arch: str = "quantif") -> str:
    st = path.stat()
    version = INPUT_SPECS[arch]["preprocessing_version"]
    tag = f"|{arch}" if arch != "quantif" else ""  # "quantif" keys unchanged: existing caches stay valid
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{version}{tag}"
    return hashlib.sha1(key.encode()).hexdigest()


def load_mips(files: Sequence[PathLike], cache_dir: PathLike | None = None, progress: bool = False,
              arch: str = "quantif") -> np.ndarray:
    """Read each PET once and return its MIP.

    Parameters
    ----------
    files : sequence of path-like
        PET volumes (SUV).
    cache_dir : path-like, optional
        If given, MIPs are stored there as ``<hash>.npy`` (hash of path, size,
        modification time, architecture and preprocessing version) and reused.
    progress : bool
        Show a tqdm bar.
    arch : {"quantif", "authors"}
        Whose input (:func:`~nnunet_quantif.tracer.preprocessing.mip_from_pet`).

    Returns
    -------
    np.ndarray, float32, shape (N, 224, 224)
    """
    check_arch(arch)
    cache = Path(cache_dir) if cache_dir is not None else None
    out = []
    for f in tqdm(files, desc="MIPs", unit="PET", disable=not progress):
        f = Path(f)
        cached = cache / f"{_cache_key(f, arch)}.npy" if cache is not None else None
        if cached is not None and cached.is_file():
            out.append(np.load(cached))
            continue
        pet, geom = read_image(f, dtype=np.float32)
        mip = mip_from_pet(pet, geom, source=str(f), arch=arch)
        if cached is not None:
            with atomic_write(cached) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, mip)
        out.append(mip)
    return np.stack(out).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- training

@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Fix the thread count and force deterministic algorithms; restore both afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, int(threads)))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int) -> list[np.ndarray]:
    """Validation indices of each fold, stratified by label.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and dealt to
    the folds in turn (continuing where the previous class stopped, so fold sizes
    differ by at most one).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    buckets: list[list[int]] = [[] for _ in range(n_folds)]
    pos = 0
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        for i in idx:
            buckets[pos % n_folds].append(int(i))
            pos += 1
    return [np.array(sorted(b), dtype=np.int64) for b in buckets]


def augment(x: torch.Tensor, gen: torch.Generator, clip: bool = True) -> torch.Tensor:
    """Light augmentation of a batch of MIPs, shape (B, 1, H, W).

    Intensity scaling by a log-uniform factor in [0.8, 1.25] (then clipped to
    [0, 1] if ``clip``, for inputs in [0, 1]; raw-SUV inputs are not clipped), a
    random shift of up to :data:`MAX_SHIFT` pixels per axis with zero fill, and a
    left-right flip with probability 0.5; all draws from ``gen``.
    """
    b, _, h, w = x.shape
    scale = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * np.log(1.25)).view(b, 1, 1, 1)
    x = x * scale
    if clip:
        x = x.clamp_(0.0, 1.0)
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (b, 2), generator=gen)
    flips = torch.rand(b, generator=gen) < 0.5
    padded = nn.functional.pad(x, (MAX_SHIFT, MAX_SHIFT, MAX_SHIFT, MAX_SHIFT))
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(shifts[i, 0]) + MAX_SHIFT, int(shifts[i, 1]) + MAX_SHIFT
        img = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = torch.flip(img, dims=(-1,)) if flips[i] else img
    return out


def train_model(mips: np.ndarray, labels: Sequence[int], config: TrainConfig, seed: int,
                on_epoch: Callable[[int, float], None] | None = None) -> MIPCNN | AuthorsMIPCNN:
    """Train one network of architecture ``config.arch`` on ``mips`` (N, 224, 224) with 0/1 ``labels`` (1 = PSMA).

    Call inside :func:`deterministic_torch` for reproducible results.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(config.arch)
    clip = config.arch != "authors"
    x_all = torch.from_numpy(np.ascontiguousarray(mips, dtype=np.float32)).unsqueeze(1)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs))
    loss_fn = nn.BCEWithLogitsLoss()
    n = len(y_all)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            xb = augment(x_all[idx], gen, clip=clip)
            loss = loss_fn(model(xb), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch, total / max(1, n))
    model.eval()
    return model


def predict_mips(model: MIPCNN | AuthorsMIPCNN, mips: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(PSMA) of each MIP, shape (N,), float64."""
    out = []
    for start in range(0, len(mips), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(mips[start:start + batch_size], dtype=np.float32)).unsqueeze(1)
        out.append(model.predict_proba(x).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def save_fold(model: MIPCNN | AuthorsMIPCNN, path: Path, fold: int, arch: str = "quantif") -> Path:
    """Write ``{'state_dict', 'fold', 'arch'}`` atomically with ``torch.save``."""
    with atomic_write(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "fold": int(fold), "arch": check_arch(arch)}, tmp)
    return path


def train_from_mips(mips: np.ndarray, tracers: Sequence[str], out_dir: PathLike, *, cases: Sequence[str] | None = None,
                    config: TrainConfig | None = None, progress: bool = False,
                    on_fold: Callable[[int, float], None] | None = None) -> TracerTrainingResult:
    """k-fold training on precomputed MIPs; writes the fold weights and ``tracer_meta.json``.

    Parameters
    ----------
    mips : np.ndarray, shape (N, 224, 224)
        Inputs from :func:`~nnunet_quantif.tracer.preprocessing.mip_from_pet` with ``arch=config.arch``.
    tracers : sequence of str
        ``'fdg'`` or ``'psma'`` per MIP.
    out_dir : path-like
        Output folder (created).
    cases : sequence of str, optional
        Case names, for the metadata.
    config : TrainConfig, optional
    progress : bool
        Show a tqdm bar over epochs.
    on_fold : callable(fold, accuracy), optional
        Called after each fold (the CLI prints from it).
    """
    config = config or TrainConfig()
    arch = _trainable(config.arch)
    out = Path(out_dir)
    mips = np.asarray(mips, dtype=np.float32)
    if mips.ndim != 3 or len(mips) != len(tracers):
        raise DatasetError(f"{out}: need N MIPs (N, H, W) and N tracers, got {mips.shape} and {len(tracers)}")
    tracers = [_normalise_tracer(t, str(out)) for t in tracers]
    labels = np.array([TRACERS.index(t) for t in tracers])
    cases = list(cases) if cases is not None else [f"case_{i}" for i in range(len(tracers))]
    counts = {t: int((labels == i).sum()) for i, t in enumerate(TRACERS)}
    if config.folds < 2:
        raise DatasetError(f"{out}: need at least 2 folds, got {config.folds}")
    if min(counts.values()) < config.folds:
        raise DatasetError(f"{out}: {config.folds}-fold CV needs at least {config.folds} cases of each tracer, "
                           f"got {counts}")
    folds = stratified_folds(labels, config.folds, config.seed)
    oof = np.full(len(labels), np.nan)
    fold_acc: list[float] = []
    fold_files: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_NAME
    if meta_path.exists():
        meta_path.unlink()  # a half-overwritten folder must not look complete
    bar = tqdm(total=config.folds * config.epochs, desc="tracer CNN", unit="epoch", disable=not progress)
    with deterministic_torch(config.threads):
        for k, val in enumerate(folds):
            train = np.setdiff1d(np.arange(len(labels)), val)
            model = train_model(mips[train], labels[train], config, seed=config.seed * 1000 + k,
                                on_epoch=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
            p = predict_mips(model, mips[val])
            oof[val] = p
            acc = float(np.mean(fold_votes_psma(p, arch).astype(int) == labels[val]))
            fold_acc.append(acc)
            fold_files.append(save_fold(model, out / fold_file_name(k), k, arch))
            logger.info("fold %d: accuracy %.3f on %d held-out cases", k, acc, len(val))
            if on_fold is not None:
                on_fold(k, acc)
    bar.close()
    cv_acc = float(np.mean(fold_votes_psma(oof, arch).astype(int) == labels))
    meta = {
        "schema": META_SCHEMA,
        "kind": "nnunet_quantif tracer discriminator (MIP-CNN)",
        "arch": arch,
        "nnunet_quantif_version": __version__,
        "torch_version": torch.__version__,
        "classes": list(TRACERS),
        "output": "P(PSMA) = sigmoid(logit)",
        "decision": DECISIONS[arch],
        "input": INPUT_SPECS[arch],
        "architecture": ARCHITECTURES[arch],
        "training": config.as_dict(),
        "seed": config.seed,
        "folds": config.folds,
        "fold_files": [f.name for f in fold_files],
        "fold_accuracy": fold_acc,
        "mean_fold_accuracy": float(np.mean(fold_acc)),
        "cv_accuracy": cv_acc,
        "n_cases": {**counts, "total": len(labels)},
        "cv_predictions": [{"case": c, "tracer": t, "fold": int(next(k for k, v in enumerate(folds) if i in v)),
                            "probability": float(oof[i])} for i, (c, t) in enumerate(zip(cases, tracers))],
    }
    write_json(meta, meta_path)
    return TracerTrainingResult(out, fold_acc, cv_acc, fold_files, meta_path, [float(v) for v in oof], cases)


def train_tracer(data_dir: PathLike, out_dir: PathLike, *, folds: int = 5, epochs: int = 30, seed: int = 0,
                 tracer_csv: PathLike | None = None, batch_size: int = 8, lr: float = 1e-3, threads: int = 1,
                 cache_dir: PathLike | None = None, progress: bool = False,
                 on_fold: Callable[[int, float], None] | None = None,
                 arch: str = "quantif") -> TracerTrainingResult:
    """Train the tracer discriminator on the PET volumes under ``data_dir`` (see the module docstring).

    Parameters
    ----------
    data_dir : path-like
        Folder searched recursively for ``*_0001.nii.gz`` / ``.nii`` / ``.mha``.
    out_dir : path-like
        Receives ``fold_<k>.pt`` and ``tracer_meta.json``.
    folds, epochs, seed, batch_size, lr, threads :
        Training settings (:class:`TrainConfig`).
    tracer_csv : path-like, optional
        Case -> tracer table (:func:`read_tracer_csv`); default: the name prefix.
    cache_dir : path-like, optional
        Where to cache the MIPs between runs.
    progress : bool
        Show tqdm bars.
    on_fold : callable(fold, accuracy), optional
    arch : {"quantif", "authors"}
        Network and input: the project's MIP-CNN, or the authors' network on their raw-SUV input.
    """
    _trainable(arch)
    files = find_pet_files(data_dir)
    tracers = label_files(files, tracer_csv)
    mips = load_mips(files, cache_dir=cache_dir, progress=progress, arch=arch)
    config = TrainConfig(folds=folds, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, threads=threads,
                         arch=arch)
    return train_from_mips(mips, tracers, out_dir, cases=[case_name(f) for f in files], config=config,
                           progress=progress, on_fold=on_fold)
