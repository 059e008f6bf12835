"""Export scikit-learn's 8×8 handwritten digits (1,797 images, shipped with the package: no
download) as a folder of PNGs plus labels.csv, the layout `privgen run` reads with
``ingest.kind: images``. The pipeline's demo (``ingest.path: sklearn:digits``) writes the same
folder into its run folder by itself; this script is for looking at the data, or for pointing
a config at a folder:

    python data/digits.py runs/digits-png      # then ingest.path: runs/digits-png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.images import export_digits

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created)")
    folder = export_digits(parser.parse_args().out)
    print(f"wrote {len(list(folder.glob('*.png')))} PNGs and labels.csv to {folder}")
