"""``brainbench index build|info|query|simulate``: gallery indexes for the ``laion`` task.

Heavy libraries (faiss, numpy, pyarrow) are imported inside the commands so ``brainbench --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

index_app = typer.Typer(
    help="Gallery indexes for the laion task: build, inspect, query, serve, simulate.", no_args_is_help=True
)


@index_app.command("build")
def build(
    source: Path = typer.Argument(..., help="Folder of LAION-layout shards (img_emb/ + metadata/, or flat)."),
    out: Path = typer.Argument(..., help="Index folder to write (manifest.json + index_XXXX.faiss)."),
    kind: str = typer.Option("auto", "--kind", help="flat (exact), ivfpq (approximate) or auto (by size)."),
    nlist: int | None = typer.Option(None, "--nlist", min=1, help="IVF lists (default ~4 sqrt(n))."),
    pq_m: int = typer.Option(64, "--pq-m", min=1, help="PQ sub-quantisers (bytes per vector)."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="Lists searched per query by default."),
    train_size: int | None = typer.Option(
        None, "--train-size", min=1, help="Vectors sampled to train IVF-PQ (default 30 per list)."
    ),
    file_rows: int | None = typer.Option(None, "--file-rows", min=1, help="Vectors per index file (shard)."),
    recall_queries: int = typer.Option(
        1000, "--recall-queries", min=0, help="Held-out queries for recall@k."
    ),
    recall_k: int = typer.Option(10, "--recall-k", min=1, help="k of the reported recall@k."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training and query samples."),
) -> None:
    """Build a FAISS index from embedding shards, streaming shard by shard; report recall if approximate."""
    from brainbench_laion.index import KINDS, build_index

    if kind not in KINDS:
        raise typer.BadParameter(f"one of {', '.join(KINDS)}", param_hint="--kind")
    manifest = build_index(
        source,
        out,
        kind,
        nlist=nlist,
        pq_m=pq_m,
        nprobe=nprobe,
        train_size=train_size,
        file_rows=file_rows,
        recall_queries=recall_queries,
        recall_k=recall_k,
        seed=seed,
    )
    _print_info(manifest)
    zero = manifest.get("zero_rows", {})
    if zero.get("count"):
        typer.echo(
            f"warning: {zero['count']} all-zero embedding row(s) (first ids {zero['first_ids'][:5]}) were indexed "
            "but match no query; they are listed in the manifest's zero_rows",
            err=True,
        )


@index_app.command("info")
def show_info(
    path: Path = typer.Argument(..., help="Index folder, clip-retrieval folder or FAISS file."),
) -> None:
    """Describe an index: kind, size, files, default nprobe and the recall measured at build time."""
    from brainbench_laion.index import LocalIndex

    _print_info(LocalIndex.open(path).describe())


@index_app.command("query")
def query(
    path: Path | None = typer.Argument(None, help="Index folder (omit with --remote)."),
    vectors: Path | None = typer.Option(None, "--vectors", help=".npy of query embeddings, one per row."),
    row: list[int] = typer.Option([], "--row", help="Use gallery source row N as a query (repeatable)."),
    k: int = typer.Option(5, "-k", min=1, help="Results per query."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF lists searched."),
    refine: int = typer.Option(
        1, "--refine", min=1, help="Re-score the top k*refine exactly from the shards."
    ),
    remote: str | None = typer.Option(None, "--remote", help="clip-retrieval back end URL instead of PATH."),
    indice_name: str | None = typer.Option(
        None, "--indice-name", help="Index name on the back end (default: its only one, from /indices-list)."
    ),
) -> None:
    """Search an index (or a clip-retrieval back end) and print the top k with url and caption."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from brainbench.errors import DataError

    gallery = _open(path, remote, indice_name, nprobe, refine)
    if vectors is not None:
        try:
            queries = np.load(vectors, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError, TypeError) as exc:  # object arrays (pickles) are never loaded
            raise DataError(f"{vectors}: not a numeric .npy array of query embeddings, one per row ({exc})") from None
    elif row:
        from brainbench_laion.shards import sample_rows

        shards = getattr(gallery, "_shards", None)
        if not shards:
            raise DataError(
                f"{path}: --row needs an index built by `brainbench index build` with its source shards"
            )
        queries = sample_rows(shards, np.array(row))
    else:
        raise typer.BadParameter("give --vectors FILE.npy or --row N", param_hint="--vectors")
    result = gallery.search(np.atleast_2d(queries), k)
    table = Table("query", "rank", "id", "score", "url", "caption")
    for q, (ids, scores, meta) in enumerate(zip(result.ids, result.scores, result.metadata, strict=True)):
        for rank, (i, s, m) in enumerate(zip(ids, scores, meta, strict=True), start=1):
            table.add_row(
                str(q), str(rank), str(i), f"{s:.4f}", str(m.get("url", "")), str(m.get("caption", ""))
            )
    Console().print(table)


@index_app.command("serve")
def serve(
    path: Path = typer.Argument(..., help="Index folder, clip-retrieval folder or FAISS file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(1234, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    indice_name: str = typer.Option("laion5B-L-14", "--indice-name", help="Name clients ask for."),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", min=0.1, help="Seconds a client has to send a whole request (else 408)."
    ),
    keep_alive: int = typer.Option(5, "--keep-alive", min=1, help="Seconds an idle connection is kept open."),
) -> None:
    """Serve an index over clip-retrieval's /knn-service protocol (for `--task-opt remote=URL`).

    FastAPI + uvicorn. Requests are limited: bodies up to 2 MiB (else 413), num_images 1 to 1000, every field
    checked (400/422 with the field named), the whole request within --read-timeout seconds.
    """
    from brainbench_laion.index import LocalIndex
    from brainbench_laion.remote import KnnServer

    server = KnnServer(LocalIndex.open(path), host, port, indice_name, read_timeout=read_timeout,
                       keep_alive=keep_alive, quiet=False)
    typer.echo(
        f"serving {path} as {indice_name!r} at {server.url}/knn-service and {server.url}/indices-list "
        "(Ctrl-C stops)"
    )
    server.serve()


@index_app.command("simulate")
def simulate(
    out: Path = typer.Argument(..., help="Folder to write img_emb/ and metadata/ shards into."),
    dataset: str = typer.Option(
        "synthetic-nsd", "--dataset", "-d", help="Dataset whose stimuli set the distribution."
    ),
    data_path: Path | None = typer.Option(None, "--data-path", help="Where the dataset lives on disk."),
    size: int = typer.Option(100_000, "--size", min=1, help="Number of distractors."),
    include_test: bool = typer.Option(
        True, "--include-test/--no-include-test", help="Mix in the test stimuli."
    ),
    subject: int | None = typer.Option(None, "--subject", help="Subject whose train/test split is used."),
    shard_rows: int = typer.Option(100_000, "--shard-rows", min=1, help="Vectors per shard file."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
) -> None:
    """Write a LAION-like gallery: distractors drawn from the dataset's per-category CLIP distribution."""
    from brainbench.plugins import get_plugins
    from brainbench.resources import GALLERY_BYTES_PER_ITEM, check_disk
    from brainbench_laion.simulate import simulate_for_dataset

    check_disk(out, size * GALLERY_BYTES_PER_ITEM, f"a {size:,}-item gallery", "--size")
    opened = get_plugins().datasets.create(dataset, root=str(data_path) if data_path else None)
    described = simulate_for_dataset(
        opened,
        size,
        out,
        include_test=include_test,
        subject=subject,
        seed=seed,
        shard_rows=shard_rows,
        progress=True,
    )
    _print_info(described)


def _open(path: Path | None, remote: str | None, indice_name: str | None, nprobe: int | None, refine: int):
    if remote:
        from brainbench_laion.remote import RemoteGallery

        gallery = RemoteGallery(remote, indice_name)
        gallery.check()  # reachable, and the index settled, before any query
        return gallery
    if path is None:
        raise typer.BadParameter("give an index PATH or --remote URL", param_hint="PATH")
    from brainbench_laion.index import LocalIndex

    gallery = LocalIndex.open(path)
    if nprobe:
        gallery.nprobe = nprobe
    gallery.refine = refine
    return gallery


def _print_info(described: dict) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(described, default=str))
