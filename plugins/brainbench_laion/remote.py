"""clip-retrieval's HTTP protocol: a client with the local index's search interface, and a small server.

Request: ``POST {url}/knn-service`` with a JSON body holding one ``embedding_input`` and the service
options; answer: a JSON list of ``{"id", "similarity", "url", "caption"}``, best first.
``GET {url}/indices-list`` answers the JSON list of the index names the back end serves.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench.suggest import closest
from brainbench_laion.gallery import Gallery, SearchResult, normalise

DEFAULT_INDICE = "laion5B-L-14"


def knn_request(embedding: np.ndarray, k: int, indice_name: str) -> dict[str, Any]:
    """The body clip-retrieval's client sends for an image-embedding query."""
    return {
        "embedding_input": [float(x) for x in embedding],
        "modality": "image",
        "indice_name": indice_name,
        "num_images": k,
        "num_result_ids": k,
        "use_mclip": False,
        "deduplicate": False,
        "use_safety_model": False,
        "use_violence_detector": False,
        "aesthetic_score": "",
        "aesthetic_weight": "",
        "text": None,
        "image": None,
        "image_url": None,
    }


class RemoteGallery:
    """A clip-retrieval back end queried over HTTP, one request per query embedding.

    ``indice_name=None`` takes the back end's only index (from ``/indices-list``); with several it asks the
    user to choose. A name the back end does not serve is an error naming the ones it does.
    """

    def __init__(self, url: str, indice_name: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.requested = indice_name
        self.indice_name: str | None = None
        self.timeout = timeout

    @property
    def name(self) -> str:
        return f"{self.url} ({self.indice_name or self.requested or 'its only index'})"

    def _open(self, request: urllib.request.Request | str, what: str) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace").strip()[:300]
            raise DataError(f"{self.url}/{what}: the back end answered HTTP {exc.code}: {body or exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.url}/{what}: no valid answer ({exc})") from exc

    def indices(self) -> list[str]:
        """The names of the indexes the back end serves (``GET /indices-list``)."""
        answer = self._open(f"{self.url}/indices-list", "indices-list")
        if not isinstance(answer, list) or not all(isinstance(name, str) for name in answer):
            raise DataError(f"{self.url}/indices-list: expected a JSON list of index names, got {answer!r}"[:300])
        return answer

    def check(self) -> str:
        """Reach the back end and settle the index to query (before any training); returns its name."""
        if self.indice_name is not None:
            return self.indice_name
        served = self.indices()
        if self.requested is not None:
            if self.requested not in served:
                near = closest(self.requested, served)
                raise DataError(
                    f"{self.url} serves no index {self.requested!r}"
                    + (f"; did you mean {near!r}?" if near else "")
                    + f" It serves: {', '.join(served) or 'none'} (--task-opt indice_name=NAME)"
                )
            self.indice_name = self.requested
        elif len(served) == 1:
            self.indice_name = served[0]
        elif not served:
            raise DataError(f"{self.url}/indices-list: the back end serves no index")
        else:
            raise DataError(
                f"{self.url} serves {len(served)} indexes: {', '.join(served)}; choose one with "
                "--task-opt indice_name=NAME"
            )
        return self.indice_name

    def _post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.url}/knn-service",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        answer = self._open(request, "knn-service")
        if isinstance(answer, dict) and "error" in answer:
            raise DataError(f"{self.url}/knn-service: back end error: {answer['error']}")
        if not isinstance(answer, list):
            raise DataError(
                f"{self.url}/knn-service: expected a JSON list of results, got {type(answer).__name__}"
            )
        return answer

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        indice_name = self.check()
        queries = normalise(np.atleast_2d(queries))
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -1.0, dtype=np.float32)
        metadata: list[list[dict]] = []
        for row, query in enumerate(queries):
            answer = self._post(knn_request(query, k, indice_name))[:k]
            for col, item in enumerate(answer):
                try:
                    ids[row, col], scores[row, col] = int(item["id"]), float(item["similarity"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise DataError(f"{self.url}/knn-service: result lacks id/similarity: {item!r}") from exc
            metadata.append([dict(item) for item in answer])
        return SearchResult(ids, scores, metadata)

    def describe(self) -> dict[str, Any]:
        return {"kind": "remote", "url": self.url, "indice_name": self.indice_name or self.requested}


class KnnServer:
    """Serves a local gallery over clip-retrieval's ``/knn-service`` and ``/indices-list`` (FastAPI + uvicorn).

    Bound to 127.0.0.1 by default; port 0 picks a free port (read it back from ``url``). As a context manager
    it serves from a background thread; ``serve()`` serves in the calling thread until Ctrl-C. The request
    limits (body size, read and keep-alive timeouts, field validation, ``num_images`` at most 1000) are
    described in :mod:`brainbench_laion.knn_service`.
    """

    def __init__(
        self,
        gallery: Gallery,
        host: str = "127.0.0.1",
        port: int = 0,
        indice_name: str = DEFAULT_INDICE,
        *,
        read_timeout: float | None = None,
        keep_alive: int | None = None,
        quiet: bool = True,
    ):
        from brainbench_laion import knn_service

        self.gallery = gallery
        self.indice_name = indice_name
        self._socket = knn_service.bind(host, port)
        self._address = self._socket.getsockname()[:2]  # kept: the URL stays readable after the server stops
        app = knn_service.build_app(self.answer, self.indices)
        self._server = knn_service.make_server(
            app,
            knn_service.READ_TIMEOUT_S if read_timeout is None else read_timeout,
            knn_service.KEEP_ALIVE_S if keep_alive is None else keep_alive,
            quiet,
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def indices(self) -> list[str]:
        """What ``/indices-list`` answers."""
        return [self.indice_name]

    def answer(self, body: Any) -> list[dict[str, Any]]:
        """The ``/knn-service`` answer to a decoded JSON body; QueryError (a ValueError) names what is wrong."""
        from brainbench_laion.knn_service import parse_query

        query = parse_query(body, self.indice_name, getattr(self.gallery, "dim", None))
        vector = np.asarray(query.embedding_input, dtype=np.float32)[None, :]
        result = self.gallery.search(vector, query.num_images)
        return [
            {"id": int(i), "similarity": float(s), "url": m.get("url", ""), "caption": m.get("caption", "")}
            for i, s, m in zip(result.ids[0], result.scores[0], result.metadata[0], strict=True)
            if i >= 0
        ]

    def serve(self) -> None:
        """Serve in this thread until interrupted (uvicorn handles SIGINT/SIGTERM in the main thread)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def __enter__(self) -> KnnServer:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()
