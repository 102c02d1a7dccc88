#!/usr/bin/env python
"""Write the deterministic synthetic panoptic dataset (COCO panoptic format).

    python tools/make_synthetic_dataset.py                      # 400 train + 50 val, 128x128
    python tools/make_synthetic_dataset.py --root /tmp/syn --num-train 20 --num-val 5 --size 96

Default root: $DETECTRON2_DATASETS/jsis_synthetic (./datasets/jsis_synthetic), which is where
the registered datasets jsis_synthetic_train / jsis_synthetic_val look for it. Same arguments
give byte-identical files; an existing split with the same arguments is reused, one made
with other arguments is left alone (error) unless --overwrite.
"""

import argparse
import errno
import logging
import sys

from jsis_d2.data.datasets.builtin import default_synthetic_root, make_synthetic_datasets
from jsis_d2.data.synthetic import SyntheticSplitMismatch
from jsis_d2.utils.folder_lock import FolderBusyError


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--root",
        default=None,
        help="output folder (default: %(default)s -> $DETECTRON2_DATASETS/jsis_synthetic)",
    )
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument(
        "--size", type=int, nargs="+", default=[128], help="image size: H (square) or H W, pixels"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="png", choices=["png", "jpg"], help="image format")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate a split that exists (same or other arguments), deleting the files the "
        "generator wrote there before; other files in it stay",
    )
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2):
        parser.error("--size takes H or H W")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    root = args.root or default_synthetic_root()
    try:
        paths = make_synthetic_datasets(
            root, args.num_train, args.num_val, size, args.seed, args.format, args.overwrite
        )
    except SyntheticSplitMismatch as e:
        sys.stderr.write(
            f"make_synthetic_dataset: error: {e.reason}; nothing was changed. Pass --overwrite "
            "to regenerate it, or choose another --root.\n"
        )
        return 2
    except (ValueError, FolderBusyError) as e:
        sys.stderr.write(f"make_synthetic_dataset: error: {e}\n")
        return 2
    except PermissionError as e:
        sys.stderr.write(
            f"make_synthetic_dataset: error: cannot write {e.filename}: {e.strerror}\n"
        )
        return 2
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
        sys.stderr.write(
            f"make_synthetic_dataset: error: cannot write {e.filename}: {e.strerror}\n"
        )
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "make_synthetic_dataset: interrupted; run it again to finish (the incomplete split "
            "is redone)\n"
        )
        return 130
    for split, p in paths.items():
        logging.getLogger("jsis_d2").info("%s: %s", split, p["panoptic_json"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
