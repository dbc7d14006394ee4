"""Reading the authors' released checkpoint folder, key for key.

The release is a Hugging Face folder: sharded safetensors (or ``pytorch_model*.bin``) with an
index. The weights are 15 GB, so everything that can be decided before reading them is decided
from the index and the safetensors headers alone (``read_layout``, ``check_keys``): names,
shapes and dtypes, against what the model expects, with an explicit list of keys that are
stored but never used (``ignore``) and of pairs stored twice for one shared tensor
(``aliases``). Only then are the tensors read (``load_tensors``), shard by shard.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin")
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
"""safetensors header dtype -> the torch dtype's name (the names reports use)."""


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor as its header describes it."""

    shape: tuple[int, ...]
    dtype: str  # torch name: "bfloat16", "float32", ...
    file: str  # shard file name inside the folder

    @property
    def nbytes(self) -> int:
        numel = 1
        for n in self.shape:
            numel *= n
        return numel * getattr(torch, self.dtype).itemsize


def _weight_map(folder: Path) -> dict[str, str] | None:
    """Stored name -> shard file from the folder's index; None when it has no index."""
    for name in INDEX_NAMES:
        index = folder / name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index}: no 'weight_map' in the index")
            return dict(weight_map)
    return None


def _file_layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every tensor in one weights file, without reading data:
    the safetensors header, or a ``.bin`` memory-mapped with ``weights_only`` (no code runs)."""
    if path.suffix == ".safetensors":
        with safe_open(path, framework="pt") as f:
            out = {}
            for k in f.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                part = f.get_slice(k)
                out[k] = (tuple(part.get_shape()), SAFETENSORS_DTYPES[part.get_dtype()])
            return out
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}


def read_layout(folder: str | Path) -> dict[str, TensorInfo]:
    """Every stored tensor's name, shape, dtype and shard, from headers only. The index and
    the shards must agree: a shard the index names that is absent, or a name the index puts
    in a shard that does not hold it, is an error (a half-downloaded folder)."""
    folder = Path(folder)
    weight_map = _weight_map(folder)
    if weight_map is None:  # one weights file, no index
        single = next((n for n in SINGLE_NAMES if (folder / n).is_file()), None)
        if single is None:
            raise FileNotFoundError(
                f"{folder}: no weights (looked for {', '.join(INDEX_NAMES + SINGLE_NAMES)})"
            )
        stored = _file_layout(folder / single)
        return {k: TensorInfo(shape, dtype, single) for k, (shape, dtype) in stored.items()}
    by_file: dict[str, list[str]] = defaultdict(list)
    for name, file in weight_map.items():
        by_file[file].append(name)
    layout: dict[str, TensorInfo] = {}
    for file, names in sorted(by_file.items()):
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: the index names shard {file}, which is absent")
        stored = _file_layout(path)
        absent = sorted(set(names) - set(stored))
        if absent:
            raise ValueError(
                f"{path}: the index puts {len(absent)} tensors here that it does not hold "
                f"(first: {absent[:3]})"
            )
        for name in names:
            shape, dtype = stored[name]
            layout[name] = TensorInfo(shape, dtype, file)
    return layout


@dataclass
class KeyReport:
    """Stored tensors against a model's expected names and shapes."""

    expected: int
    stored: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )
    alias_mismatches: list[tuple[str, str]] = field(default_factory=list)
    aliases: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    nbytes: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.unexpected or self.shape_mismatches or self.alias_mismatches
        )

    def summary(self, limit: int = 10) -> str:
        """A human-readable report (what a dry run prints)."""

        def listed(title: str, items: Sequence) -> list[str]:
            if not items:
                return []
            more = f" (first {limit})" if len(items) > limit else ""
            return [f"{title}: {len(items)}{more}"] + [f"  {i}" for i in items[:limit]]

        dtypes = ", ".join(f"{n} {d}" for d, n in sorted(self.dtypes.items()))
        lines = [
            f"stored tensors: {self.stored} ({self.nbytes / 2**30:.2f} GiB; {dtypes})",
            f"expected by the model: {self.expected}; ignored (stored, never used): "
            f"{len(self.ignored)}; alias pairs (one tensor, two names): {self.aliases}",
            *listed("missing", self.missing),
            *listed("unexpected", self.unexpected),
            *listed("shape mismatches (name, expected, stored)", self.shape_mismatches),
            *listed("alias pairs whose shapes differ", self.alias_mismatches),
            "OK: every expected tensor is stored with its shape" if self.ok else "NOT LOADABLE",
        ]
        return "\n".join(lines)


def check_keys(
    expected: Mapping[str, Sequence[int]],
    layout: Mapping[str, TensorInfo],
    ignore: Iterable[str] = (),
    aliases: Iterable[tuple[str, str]] = (),
) -> KeyReport:
    """Compare stored names/shapes with the model's (``expected``: stored name -> shape).
    ``ignore``: glob patterns of stored names that are never used (not 'unexpected');
    ``aliases``: pairs of stored names that must hold one tensor (same shape here; same values
    are checked when they are read)."""
    patterns = list(ignore)
    ignored = sorted(k for k in layout if any(fnmatch.fnmatchcase(k, p) for p in patterns))
    skip = set(ignored)
    pairs = list(aliases)
    report = KeyReport(
        expected=len(expected),
        stored=len(layout),
        missing=sorted(k for k in expected if k not in layout),
        unexpected=sorted(k for k in layout if k not in expected and k not in skip),
        ignored=ignored,
        shape_mismatches=[
            (k, tuple(expected[k]), layout[k].shape)
            for k in sorted(expected)
            if k in layout and tuple(expected[k]) != layout[k].shape
        ],
        alias_mismatches=[
            (a, b)
            for a, b in pairs
            if a in layout and b in layout and layout[a].shape != layout[b].shape
        ],
        aliases=len(pairs),
        dtypes=dict(Counter(info.dtype for info in layout.values())),
        nbytes=sum(info.nbytes for info in layout.values()),
    )
    return report


def load_tensors(
    folder: str | Path,
    names: Iterable[str],
    layout: Mapping[str, TensorInfo] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The named stored tensors (cast to ``dtype`` if given), read one shard at a time."""
    folder = Path(folder)
    layout = read_layout(folder) if layout is None else layout
    by_file: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_file[layout[name].file].append(name)
    out: dict[str, torch.Tensor] = {}
    for file, wanted in sorted(by_file.items()):
        path = folder / file
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as f:
                shard = {k: f.get_tensor(k) for k in wanted}
        else:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            shard = {k: stored[k] for k in wanted}
        for k, t in shard.items():
            out[k] = t if dtype is None else t.to(dtype)
    return out


def check_alias_values(tensors: Mapping[str, torch.Tensor], aliases: Iterable[tuple[str, str]]):
    """Raise if a pair stored for one shared tensor holds different values (a corrupted or
    edited checkpoint: the model would silently use one of them)."""
    differ = [
        (a, b)
        for a, b in aliases
        if a in tensors and b in tensors and not torch.equal(tensors[a], tensors[b])
    ]
    if differ:
        raise ValueError(
            f"{len(differ)} alias pairs hold different values, one tensor expected "
            f"(first: {differ[:3]})"
        )


@dataclass
class CheckpointSpec:
    """What a model needs from a released folder: stored name -> shape, stored name -> the
    model's own state-dict name, stored names never used (globs), and stored pairs that are
    one shared tensor. A model family gives it from its config alone (built on the meta
    device), so a dry run needs no weights."""

    expected: dict[str, tuple[int, ...]]
    rename: dict[str, str]
    ignore: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()

    def subset(self, own_prefix: str) -> CheckpointSpec:
        """The part held by one submodule (own names under ``own_prefix``, stripped of it);
        every other stored tensor is ignored, e.g. HIPIE alone out of the 15 GB release."""
        inside = {k: v for k, v in self.rename.items() if v.startswith(own_prefix)}
        rename = {k: v.removeprefix(own_prefix) for k, v in inside.items()}
        return CheckpointSpec(
            {k: self.expected[k] for k in rename},
            rename,
            ("*",),
            tuple(p for p in self.aliases if p[0] in rename and p[1] in rename),
        )

    def check(
        self, folder: str | Path, layout: Mapping[str, TensorInfo] | None = None
    ) -> KeyReport:
        """The dry run: headers only (``layout``: the folder's, when already read)."""
        layout = read_layout(folder) if layout is None else layout
        return check_keys(self.expected, layout, self.ignore, self.aliases)

    def load(
        self,
        folder: str | Path,
        dtype: torch.dtype | None = None,
        layout: Mapping[str, TensorInfo] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model's state dict (own names) from the folder; a ``ValueError`` with the
        dry-run report, before any tensor is read, when the folder does not fit."""
        layout = read_layout(folder) if layout is None else layout
        report = check_keys(self.expected, layout, self.ignore, self.aliases)
        if not report.ok:
            raise ValueError(f"{folder} does not fit the model:\n{report.summary()}")
        tensors = load_tensors(folder, self.expected, layout, dtype)
        check_alias_values(tensors, self.aliases)
        return {self.rename[k]: t for k, t in tensors.items()}
