"""Make nxbar/_data/cifar10_test_first1000.npz, the embedded default evaluation set, with nxbar's own loader.

    python3 tools/make_embedded.py [path/to/cifar-10-subset-python.tar.gz]

Converts the first 1,000 test images of the lossless CIFAR-10 subset (default: ../shared/data/) into a
compressed npz of plain arrays, read back with allow_pickle=False:
  images       uint8 (1000, 32, 32, 3)   RGB, as load_cifar returns them
  labels       int64 (1000,)
  class_names  fixed-width unicode (10,)
  source       0-d unicode: where the images come from, with the sha256 of the source file
tests/test_data.py checks that the stored arrays equal the loader's output on the source file.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nxbar.data.cifar import load_cifar  # noqa: E402
from nxbar.data.load import embedded_path  # noqa: E402

N_IMAGES = 1000
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cifar-10-subset-python.tar.gz"


def main(source: Path = DEFAULT_SOURCE) -> None:
    ds = load_cifar(source, "test")
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    out = embedded_path()
    out.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        out,
        images=ds.images[:N_IMAGES],
        labels=ds.labels[:N_IMAGES],
        class_names=np.array(ds.class_names),
        source=np.array(
            f"first {N_IMAGES} CIFAR-10 test images (test_batch), lossless, converted by nxbar.data.cifar.load_cifar "
            f"from {source.name} (sha256 {sha256})"
        ),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) from {source} (sha256 {sha256})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
