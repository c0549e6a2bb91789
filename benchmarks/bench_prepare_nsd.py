"""Peak memory of `brainbench data prepare nsd` (session by session) against the size of all sessions.

    python benchmarks/bench_prepare_nsd.py [--sessions 2 6] [--volume 36 40 36] [--trials 750] [--keep DIR]

Writes a fake raw-NSD tree (750 trials per session as NSD has, a smaller volume; files written by h5py,
nibabel and scipy.io), then runs the preparation in a fresh process per session count and reads that
process's peak resident memory (``os.wait4`` rusage). The floor is a process that imports the same modules
and does nothing else, measured in the same run. A build that held every session at once would need at
least "all sessions" more than the floor; a session-by-session one stays near one session, whatever the count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

IMPORTS = "import numpy, h5py, nibabel, scipy.io; import brainbench_nsd.prepare as p"
BUILD = IMPORTS + "; p.prepare_nsd(sys.argv[1], sys.argv[2], 1, trials_per_session=int(sys.argv[3]))"


def write_tree(root: Path, sessions: int, trials: int, volume: tuple[int, int, int], seed: int = 0) -> int:
    """A raw-NSD tree for subject 1, written one session at a time; returns the ROI's voxel count."""
    import nibabel
    import scipy.io

    rng = np.random.default_rng(seed)
    design = root / "nsddata" / "experiments" / "nsd"
    design.mkdir(parents=True, exist_ok=True)
    n_images = 10_000
    subjectim = np.stack([rng.choice(np.arange(1, 73001), n_images, replace=False) for _ in range(8)])
    scipy.io.savemat(design / "nsd_expdesign.mat", {
        "masterordering": rng.integers(1, n_images + 1, (1, sessions * trials)).astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": subjectim[0, :1000][None, :].astype(np.float64),
    })
    labels = rng.choice(np.array([1, 0, -1], dtype=np.int16), size=volume, p=[0.4, 0.4, 0.2])
    roi = root / "nsddata" / "ppdata" / "subj01" / "func1pt8mm" / "roi"
    roi.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(labels, affine=np.eye(4)), str(roi / "nsdgeneral.nii.gz"))
    folder = root / "nsddata_betas" / "ppdata" / "subj01" / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
    folder.mkdir(parents=True, exist_ok=True)
    zyx = volume[::-1]
    for session in range(1, sessions + 1):
        with h5py.File(folder / f"betas_session{session:02d}.hdf5", "w") as f:
            ds = f.create_dataset("betas", shape=(trials, *zyx), dtype="int16", chunks=(1, *zyx))
            for start in range(0, trials, 50):
                stop = min(start + 50, trials)
                ds[start:stop] = rng.integers(-3000, 3000, (stop - start, *zyx), dtype=np.int16)
    return int((labels == 1).sum())


def peak_rss_mib(code: str, *args: str) -> tuple[float, float]:
    """(peak resident MiB, seconds) of a fresh Python process running ``code``."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", "import sys; " + code, *args])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"child failed with status {child.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--volume", type=int, nargs=3, default=[36, 40, 36], metavar=("X", "Y", "Z"))
    parser.add_argument("--trials", type=int, default=750, help="trials per session (NSD: 750)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_prepare_nsd_"))
    volume = tuple(args.volume)
    floor, _ = peak_rss_mib(IMPORTS)
    print(f"volume {volume} (X, Y, Z), {args.trials} trials per session; floor (imports only): {floor:.0f} MiB")
    print(f"{'sessions':>8} {'voxels':>7} {'raw int16 all':>14} {'ROI float32 all':>16} {'ROI 1 session':>14} "
          f"{'peak RSS':>9} {'peak-floor':>11} {'(peak-floor)/all':>17} {'seconds':>8}")
    try:
        for sessions in args.sessions:
            root, out = base / f"nsd_{sessions}", base / f"out_{sessions}"
            voxels = write_tree(root, sessions, args.trials, volume)
            raw_all = sessions * args.trials * int(np.prod(volume)) * 2 / 2**20
            roi_all = sessions * args.trials * voxels * 4 / 2**20
            roi_one = args.trials * voxels * 4 / 2**20
            peak, seconds = peak_rss_mib(BUILD, str(root), str(out), str(args.trials))
            with h5py.File(out / "betas_all_subj01_fp32_renorm.hdf5") as f:
                assert f["betas"].shape == (sessions * args.trials, voxels)
            print(f"{sessions:>8} {voxels:>7} {raw_all:>11.0f} MiB {roi_all:>12.0f} MiB {roi_one:>10.0f} MiB "
                  f"{peak:>5.0f} MiB {peak - floor:>7.0f} MiB {(peak - floor) / roi_all:>17.2f} {seconds:>8.1f}")
            if args.keep is None:
                shutil.rmtree(root)
                shutil.rmtree(out)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
