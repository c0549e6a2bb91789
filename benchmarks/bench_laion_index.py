"""Gallery index benchmark: build and query speed, IVF-PQ recall@k, peak memory; exact flat as the baseline.

    python benchmarks/bench_laion_index.py --size 1000000      # the issue's figure (several minutes)
    python benchmarks/bench_laion_index.py --size 20000 --queries 200 --pq-m 16   # CI smoke run

Each phase runs in its own process, so its peak resident memory (ru_maxrss) is its own. The gallery is a
simulated LAION-layout gallery (float16 shards) drawn from the synthetic NSD dataset's category model
(``--dataset none``: random category centres). Queries are gallery rows plus Gaussian noise of relative
norm 0.5 (near, not equal to, a gallery item, as decoder predictions are); exact flat search gives the truth.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def phase_simulate(out: Path, size: int, dataset: str, shard_rows: int, seed: int) -> dict[str, Any]:
    from brainbench_laion.simulate import CategoryModel, fit_category_model, simulate_gallery

    if dataset == "none":
        model = CategoryModel.random(100, 768, seed=seed)
    else:
        from brainbench.plugins import get_plugins

        model = fit_category_model(get_plugins().datasets.create(dataset))
    started = time.perf_counter()
    simulate_gallery(model, size, out, source_name=dataset, shard_rows=shard_rows, seed=seed)
    return {"seconds": time.perf_counter() - started, "categories": len(model.names)}


def phase_build(source: Path, out: Path, kind: str, pq_m: int, seed: int) -> dict[str, Any]:
    from brainbench_laion.index import build_index

    manifest = build_index(source, out, kind, pq_m=pq_m, recall_queries=0, seed=seed, progress=False)
    keys = (
        "kind",
        "ntotal",
        "build_seconds",
        "train_seconds",
        "vectors_per_second",
        "nlist",
        "pq_m",
        "nprobe",
    )
    return {**{k: manifest[k] for k in keys if k in manifest}, "disk_mib": _disk_mib(out)}


def phase_queries(source: Path, n: int, seed: int, out: Path) -> dict[str, Any]:
    import numpy as np

    from brainbench_laion.gallery import normalise
    from brainbench_laion.shards import find_shards, sample_rows, total_rows

    shards = find_shards(source)
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(total_rows(shards), size=n, replace=False))
    base = normalise(sample_rows(shards, rows))
    queries = normalise(
        base + rng.normal(size=base.shape).astype(np.float32) * (0.5 / np.sqrt(base.shape[1]))
    )
    np.save(out, queries)
    return {"queries": n}


def phase_search(
    index_dir: Path, queries_path: Path, k: int, refine: int, nprobe: int | None, out: Path
) -> dict[str, Any]:
    import numpy as np

    from brainbench_laion.index import LocalIndex

    queries = np.load(queries_path)
    started = time.perf_counter()
    index = LocalIndex.open(index_dir)
    open_seconds = time.perf_counter() - started
    if nprobe:
        index.nprobe = nprobe
    index.refine = refine
    started = time.perf_counter()
    result = index.search(queries, k, with_metadata=False)
    seconds = time.perf_counter() - started
    np.save(out, result.ids)
    return {
        "open_seconds": open_seconds,
        "search_seconds": seconds,
        "queries_per_second": len(queries) / seconds,
        "nprobe": index.nprobe,
        "refine": refine,
    }


def _worker(target, args, queue) -> None:
    result = target(*args)
    result["peak_rss_mib"] = _peak_mib()
    queue.put(result)


def run_phase(name: str, target, *args) -> dict[str, Any]:
    """Run one phase in a fresh process; its result gains the process's peak RSS and wall time."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    started = time.perf_counter()
    process = ctx.Process(target=_worker, args=(target, args, queue))
    process.start()
    import queue as queues

    while True:  # a phase that dies (out of memory, a signal) ends the benchmark with its reason, not a hang
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not process.is_alive():
                code = process.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise SystemExit(f"phase {name} died with {how} (dmesg says whether the OOM killer did it)") from None
    process.join()
    if process.exitcode:
        raise SystemExit(f"phase {name} failed with exit code {process.exitcode}")
    result["wall_seconds"] = time.perf_counter() - started
    print(
        f"  {name}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})}",
        flush=True,
    )
    return result


def recall(found_path: Path, truth_path: Path, k: int) -> float:
    import numpy as np

    from brainbench_laion.index import recall_at_k

    return recall_at_k(np.load(found_path), np.load(truth_path), k)


def nearest_found(found_path: Path, truth_path: Path) -> float:
    """1-recall@k: how often the exact nearest item is among the approximate top k."""
    import numpy as np

    found, truth = np.load(found_path), np.load(truth_path)
    return float(np.mean([t[0] in f for f, t in zip(found, truth, strict=True)]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1_000_000, help="gallery vectors (768-d)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-rows", type=int, default=250_000, help="vectors per img_emb shard")
    parser.add_argument(
        "--dataset", default="synthetic-nsd", help="dataset whose categories shape the gallery"
    )
    parser.add_argument(
        "--pq-m", type=int, default=64, help="PQ bytes per vector (16 trains 4x faster, for CI)"
    )
    parser.add_argument(
        "--refine", type=int, default=10, help="exact re-rank depth factor for the refined run"
    )
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the gallery and indexes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_laion_"))
    work.mkdir(parents=True, exist_ok=True)
    gallery, flat_dir, ivf_dir = work / "gallery", work / "flat", work / "ivfpq"
    for folder in (gallery, flat_dir, ivf_dir):
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"LAION index benchmark: {args.size:,} x 768 vectors, {args.queries} queries, k={args.k}, in {work}"
    )
    try:
        sim = run_phase(
            "simulate", phase_simulate, gallery, args.size, args.dataset, args.shard_rows, args.seed
        )
        run_phase("queries", phase_queries, gallery, args.queries, args.seed, work / "queries.npy")
        flat = run_phase("build flat", phase_build, gallery, flat_dir, "flat", args.pq_m, args.seed)
        ivf = run_phase("build ivfpq", phase_build, gallery, ivf_dir, "ivfpq", args.pq_m, args.seed)
        flat_q = run_phase(
            "search flat",
            phase_search,
            flat_dir,
            work / "queries.npy",
            args.k,
            1,
            None,
            work / "flat_ids.npy",
        )
        ivf_q = run_phase(
            "search ivfpq", phase_search, ivf_dir, work / "queries.npy", args.k, 1, None, work / "ivf_ids.npy"
        )
        ref_q = run_phase(
            f"search ivfpq refine{args.refine}",
            phase_search,
            ivf_dir,
            work / "queries.npy",
            args.k,
            args.refine,
            None,
            work / "ref_ids.npy",
        )
        ivf_recall = recall(work / "ivf_ids.npy", work / "flat_ids.npy", args.k)
        ref_recall = recall(work / "ref_ids.npy", work / "flat_ids.npy", args.k)
        ivf_nearest = nearest_found(work / "ivf_ids.npy", work / "flat_ids.npy")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("build vectors/s", flat["vectors_per_second"], ivf["vectors_per_second"]),
        ("build peak RSS MiB", flat["peak_rss_mib"], ivf["peak_rss_mib"]),
        ("index on disk MiB", flat["disk_mib"], ivf["disk_mib"]),
        ("queries/s", flat_q["queries_per_second"], ivf_q["queries_per_second"]),
        ("search peak RSS MiB", flat_q["peak_rss_mib"], ivf_q["peak_rss_mib"]),
        (f"recall@{args.k} vs exact", 1.0, ivf_recall),
        (f"1-recall@{args.k} vs exact", 1.0, ivf_nearest),
    ]
    print(f"\nsimulated gallery: {sim['seconds']:.1f} s, {sim['categories']} categories ({args.dataset})")
    print(
        f"IVF-PQ: nlist={ivf.get('nlist')}, m={ivf.get('pq_m')}, nprobe={ivf_q['nprobe']}, "
        f"train {ivf.get('train_seconds', 0):.1f} s of {ivf['build_seconds']:.1f} s build"
    )
    print(f"\n{'':24}{'flat (exact)':>16}{'ivfpq':>16}{'ivfpq/flat':>12}")
    for label, base, approx in rows:
        print(f"{label:24}{base:16.4g}{approx:16.4g}{approx / base if base else float('nan'):12.3g}")
    print(
        f"{'ivfpq refine' + str(args.refine):24}{'':16}{ref_q['queries_per_second']:16.4g} queries/s, "
        f"recall@{args.k} {ref_recall:.4f}"
    )
    summary = {
        "size": args.size,
        "flat": flat,
        "ivfpq": ivf,
        "search_flat": flat_q,
        "search_ivfpq": ivf_q,
        "search_ivfpq_refine": ref_q,
        "recall_ivfpq": ivf_recall,
        "nearest_in_topk_ivfpq": ivf_nearest,
        "recall_ivfpq_refine": ref_recall,
    }
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
