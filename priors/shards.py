"""Sharded recon checkpoints: one prior as ``K`` safetensors files of bounded size.

``save_sharded("out/NAME.safetensors", network, card, max_mib)`` writes
``out/NAME-00001-of-0000K.safetensors`` ... ``out/NAME-0000K-of-0000K.safetensors``, each at
most ``max_mib`` MiB (2**20 bytes) *as a file* (header included), and the card
``out/NAME.yaml`` beside them for people. Tensors are never split: they are packed in state
dict order, and a tensor that cannot fit a shard on its own is an error naming it.

The shards alone are a complete prior: every shard's safetensors string metadata holds

* ``format``: ``recon-prior-shards/1``;
* ``shard`` / ``shards``: this file's number (1-based) and ``K``;
* ``sha256``: a digest of this file's tensors (names, dtypes, shapes, bytes), checked on loading
  (a corrupt copy is an error naming the file);
* ``set``: a digest of the card, the index and every shard's ``sha256``, the same in all shards
  of one export, so that shards of different exports are never mixed;

and the first shard also holds ``card`` (the model card as YAML) and ``index`` (JSON: tensor
name -> shard number). :func:`load_sharded` reads the whole set from any one shard's path or
from the common stem (``out/NAME`` or ``out/NAME.safetensors``), checks that the ``K`` shards
are all present, of one set and hold what the index says, and builds the prior from the
embedded card (tensors must fit it, as for single files). Weights saved as float16/bfloat16
are cast back to the network's float32 on loading.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from .atomic import write_atomic
from .card import CheckpointError, card_text, read_card
from .checkpoint import export_state, prior_from_card
from .prior import DiffusionPrior

FORMAT = "recon-prior-shards/1"
MIB = 2**20
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")


def shard_path(stem: Path, index: int, count: int) -> Path:
    """``stem-{index:05d}-of-{count:05d}.safetensors`` beside ``stem`` (index 1-based)."""
    return stem.with_name(f"{stem.name}-{index:05d}-of-{count:05d}.safetensors")


def _stem(path: Path) -> Path:
    """The common stem of an export path ``NAME.safetensors``, of a shard path, or of a stem."""
    match = _SHARD.match(path.name)
    if match:
        return path.with_name(match["stem"])
    return path.with_suffix("") if path.suffix == ".safetensors" else path


def is_shard_name(path: str | Path) -> bool:
    """Whether ``path`` is named like a shard (``NAME-0000i-of-0000K.safetensors``)."""
    return _SHARD.match(Path(path).name) is not None


def find_shards(path: str | Path) -> list[Path]:
    """Every file named like a shard of ``path``'s stem (any ``K``), sorted; empty when none."""
    stem = _stem(Path(path))
    if not stem.parent.is_dir():
        return []
    return sorted(p for p in stem.parent.iterdir()
                  if (m := _SHARD.match(p.name)) and m["stem"] == stem.name)


# --- writing ---------------------------------------------------------------------------
def _tensor_entry_bytes(name: str, tensor: torch.Tensor) -> int:
    """An upper bound on the header bytes of ``tensor``'s entry (name, dtype, shape, offsets)."""
    return len(json.dumps(name)) + len(json.dumps(list(tensor.shape))) + 2 * 20 + 64


def _metadata_bytes(metadata: Mapping[str, str]) -> int:
    """An upper bound on the header bytes of the metadata (JSON, ASCII-escaped)."""
    return len(json.dumps({"__metadata__": dict(metadata)})) + 64


def _partition(state: Mapping[str, torch.Tensor], limit: int, first_header: int,
               other_header: int) -> list[list[str]]:
    """Tensor names per shard, packed greedily in order so that each file stays <= ``limit`` bytes."""
    shards: list[list[str]] = [[]]
    used = first_header
    for name, tensor in state.items():
        need = tensor.numel() * tensor.element_size() + _tensor_entry_bytes(name, tensor)
        if used + need > limit and shards[-1]:
            shards.append([])
            used = other_header
        if used + need > limit:
            raise CheckpointError(
                f"tensor {name!r} ({need / MIB:.2f} MiB with its header entry) does not fit a shard of "
                f"{limit / MIB:.4g} MiB; raise train.shard_mib (tensors are never split across files)")
        shards[-1].append(name)
        used += need
    return shards


def _tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _set_digest(card: str, index: str, shard_digests: Sequence[str]) -> str:
    """The set identity: the first 32 hex digits of sha256 over card, index and shard digests."""
    return hashlib.sha256("\0".join([card, index, *shard_digests]).encode()).hexdigest()[:32]


def save_sharded(path: str | Path, network: torch.nn.Module, card: Mapping[str, Any], max_mib: float,
                 dtype: torch.dtype = torch.float32) -> list[Path]:
    """Write ``network``'s weights (as ``dtype``) as shards of at most ``max_mib`` MiB beside
    ``path`` (``out/NAME.safetensors`` -> ``out/NAME-0000i-of-0000K.safetensors``) and the card
    ``out/NAME.yaml``, each atomically; returns the shard paths (first one first). Shards of an
    earlier export to the same stem that are not part of this set are removed."""
    from safetensors.torch import save

    if not max_mib > 0:
        raise ValueError(f"shard size must be positive, got {max_mib} MiB")
    stem = _stem(Path(path))
    state = export_state(network, dtype)
    text = card_text(card)
    limit = int(max_mib * MIB)
    base = {"format": FORMAT, "set": "0" * 32, "shard": "99999", "shards": "99999", "sha256": "0" * 64}
    widest_index = json.dumps({name: 99999 for name in state})
    names = _partition(state, limit, _metadata_bytes({**base, "card": text, "index": widest_index}),
                       _metadata_bytes(base))
    index = json.dumps({name: i + 1 for i, group in enumerate(names) for name in group})
    groups = [{name: state[name] for name in group} for group in names]
    digests = [_tensors_digest(group) for group in groups]
    set_id = _set_digest(text, index, digests)
    paths = [shard_path(stem, i + 1, len(names)) for i in range(len(names))]
    for i, (group, target) in enumerate(zip(groups, paths)):
        metadata = {**base, "set": set_id, "shard": str(i + 1), "shards": str(len(names)), "sha256": digests[i]}
        if i == 0:
            metadata.update(card=text, index=index)
        data = save(group, metadata=metadata)
        if len(data) > limit:  # the header bounds above are generous: this is a bug if reached
            raise CheckpointError(f"{target}: {len(data)} bytes exceeds the shard limit of {limit} bytes")
        write_atomic(target, data)
    write_atomic(stem.with_name(stem.name + ".yaml"), text)
    for stale in set(find_shards(stem)) - set(paths):
        stale.unlink(missing_ok=True)
    return paths


# --- reading ---------------------------------------------------------------------------
def _read_shard(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as err:  # truncated or foreign file
        raise CheckpointError(f"{path}: cannot read shard ({type(err).__name__}: {err})") from None
    return metadata, tensors


def shard_set(path: str | Path) -> list[Path]:
    """The ``K`` shard paths of the set that ``path`` (a shard, ``NAME.safetensors`` or the stem
    ``NAME``) names, checked present; any other file named like a shard of the stem is an error."""
    path = Path(path)
    found = find_shards(path)
    match = _SHARD.match(path.name)
    if match is None:
        if not found:
            raise CheckpointError(f"{path}: no checkpoint or shards "
                                  f"({_stem(path).name}-00001-of-*.safetensors) found")
        match = _SHARD.match(found[0].name)
        assert match is not None
    count = int(match["count"])
    if count < 1:
        raise CheckpointError(f"{path}: a shard set has at least one file")
    expected = [shard_path(_stem(path), i, count) for i in range(1, count + 1)]
    for number, target in enumerate(expected, start=1):
        if not target.is_file():
            raise CheckpointError(f"{target}: shard missing (shard {number} of {count}; "
                                  "every shard of the set is needed)")
    extras = sorted(set(found) - set(expected))
    if extras:
        raise CheckpointError(f"{extras[0]}: extra shard, not part of the {count}-shard set {expected[0].name}; "
                              "remove it (left from another export?)")
    return expected


def load_sharded(path: str | Path, card: str | Path | None = None) -> DiffusionPrior:
    """Load the shard set that ``path`` names (see :func:`shard_set`) as one prior.

    The card is the one embedded in the first shard, or ``card`` (a YAML path) when given.
    Errors name the offending file: missing or extra shards, shards of another export, tensors
    that are not where the index says, and (from the network) tensors that do not fit the card.
    """
    paths = shard_set(path)
    count = len(paths)
    state: dict[str, torch.Tensor] = {}
    first_meta: dict[str, str] = {}
    index: dict[str, int] = {}
    digests: list[str] = []
    for number, target in enumerate(paths, start=1):
        metadata, tensors = _read_shard(target)
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{target}: not a shard of a recon prior (metadata format "
                                  f"{metadata.get('format')!r}, expected {FORMAT!r})")
        if metadata.get("shard") != str(number) or metadata.get("shards") != str(count):
            raise CheckpointError(f"{target}: metadata says shard {metadata.get('shard')} of "
                                  f"{metadata.get('shards')}, its name says {number} of {count} (renamed?)")
        if number == 1:
            first_meta = metadata
            try:
                index = json.loads(metadata["index"])
            except (KeyError, json.JSONDecodeError):
                raise CheckpointError(f"{target}: first shard without a valid index of tensors") from None
        elif metadata.get("set") != first_meta.get("set"):
            raise CheckpointError(f"{target}: shard of a different export (set {metadata.get('set')!r}, "
                                  f"expected {first_meta.get('set')!r} as in {paths[0].name})")
        if _tensors_digest(tensors) != metadata.get("sha256"):
            raise CheckpointError(f"{target}: contents do not match the shard's sha256 (corrupt or altered copy)")
        wanted = {name for name, at in index.items() if at == number}
        if set(tensors) != wanted:
            odd = sorted(set(tensors) ^ wanted)
            raise CheckpointError(f"{target}: holds tensors that do not match the index (first: {odd[0]!r})")
        state.update(tensors)
        digests.append(metadata["sha256"])
    if _set_digest(first_meta.get("card", ""), first_meta["index"], digests) != first_meta.get("set"):
        raise CheckpointError(f"{paths[0]}: card or index do not match the set digest (altered metadata)")
    state = {name: state[name] for name in index if name in state}  # in the network's order
    if card is not None:
        card_dict = read_card(card)
    else:
        card_dict = yaml.safe_load(first_meta.get("card", "")) if "card" in first_meta else None
        if not isinstance(card_dict, dict) or not isinstance(card_dict.get("network"), dict):
            raise CheckpointError(f"{paths[0]}: embedded model card missing or without a 'network' mapping")
    return prior_from_card(card_dict, state, source=str(paths[0]))
