"""Reading ``npz:PATH[+PATH]`` specs: the arrays of one or two .npz files, without pickle.

Anything wrong with the files (not a zip, an object array, a truncated member, an array name
in both files, a required array missing, a zip that unpacks to absurd sizes) is one
:class:`~ardbench.data.arrays.DataError` or :class:`~ardbench.data.arrays.MissingArrayError`
naming the file; the arrays themselves are validated by :mod:`ardbench.data.arrays`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import first_line
from .arrays import DataError, MissingArrayError

NPZ_PREFIX = "npz:"
_NPZ_SPLIT = re.compile(r"(?<=\.npz)\+", re.IGNORECASE)


# the most bytes the arrays of one npz spec may unpack to (a zip bomb is refused, not read)
MAX_NPZ_BYTES = 32 << 30


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of one .npz file, read without pickle; anything else is one DataError."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{path} is not an .npz file ({first_line(exc)})",
            hint="write it with numpy.savez(PATH, x_test=..., y_test=...)",
        ) from None
    if declared > MAX_NPZ_BYTES:
        raise DataError(f"{path} unpacks to {declared} bytes, more than {MAX_NPZ_BYTES}")
    arrays: dict[str, np.ndarray] = {}
    what = f"{path}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                what = f"{path}: array {key!r}"
                arrays[key] = npz[key]
    except OSError:
        raise
    except Exception as exc:  # numpy: ValueError (object arrays, bad headers), zip errors...
        text = first_line(exc)
        if "pickle" in text.lower():
            text = "an object array, which is not loaded (allow_pickle=False)"
        raise DataError(
            f"{what} cannot be read ({text})", hint="store plain numeric arrays (numpy.savez)"
        ) from None
    return arrays


def read_npz_spec(spec: str) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of the files of ``spec`` (merged) and the files, joined for messages."""
    body = spec[len(NPZ_PREFIX) :]
    if not body:
        raise DataError(
            "npz: spec needs a path", hint="e.g. npz:data/my.npz or npz:TRAIN.npz+TEST.npz"
        )
    paths = [Path(p).expanduser() for p in _NPZ_SPLIT.split(body)]
    arrays: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"npz file {path} does not exist (from spec {spec!r})")
        for key, value in _read_npz(path).items():
            if key in arrays:
                raise DataError(
                    f"array {key!r} is in both {origin[key]} and {path}; the files of "
                    f"npz:A+B must not share array names"
                )
            arrays[key] = value
            origin[key] = path
    files = " + ".join(str(p) for p in paths)
    for key in ("x_test", "y_test"):
        if key not in arrays:
            hint = (
                f" It holds training data only: combine it with a test file, npz:{files}+TEST.npz."
                if "x_train" in arrays
                else ""
            )
            raise MissingArrayError(
                f"npz {files} has no array {key!r} (arrays: "
                f"{', '.join(sorted(arrays)) or 'none'}).{hint}"
            )
    if ("x_train" in arrays) != ("y_train" in arrays):
        missing = "y_train" if "x_train" in arrays else "x_train"
        raise MissingArrayError(
            f"npz {files} has no array {missing!r} (it has "
            f"{'x_train' if missing == 'y_train' else 'y_train'}; both or neither)"
        )
    return arrays, files
