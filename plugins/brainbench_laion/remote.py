"""clip-retrieval's HTTP protocol: a client with the local index's search interface, and a small server.

Request: ``POST {url}/knn-service`` with a JSON body holding one ``embedding_input`` and the service
options; answer: a JSON list of ``{"id", "similarity", "url", "caption"}``, best first.
``GET {url}/indices-list`` answers the JSON list of the index names the back end serves.
"""

from __future__ import annotations

import difflib
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from brainbench.errors import DataError
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
                near = difflib.get_close_matches(self.requested, served, n=1, cutoff=0.5)
                raise DataError(
                    f"{self.url} serves no index {self.requested!r}"
                    + (f"; did you mean {near[0]!r}?" if near else "")
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
    """Serves a local gallery over clip-retrieval's ``/knn-service`` and ``/indices-list`` in a background thread.

    Bound to 127.0.0.1 by default; port 0 picks a free port (read it back from ``url``).
    """

    def __init__(
        self, gallery: Gallery, host: str = "127.0.0.1", port: int = 0, indice_name: str = DEFAULT_INDICE
    ):
        self.gallery = gallery
        self.indice_name = indice_name
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") != "/indices-list":
                    self._reply(404, {"error": f"unknown path {self.path}"})
                    return
                self._reply(200, server.indices())

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") != "/knn-service":
                    self._reply(404, {"error": f"unknown path {self.path}"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._reply(200, server.answer(body))
                except (ValueError, KeyError, TypeError) as exc:
                    self._reply(400, {"error": str(exc)})

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler

    def indices(self) -> list[str]:
        """What ``/indices-list`` answers."""
        return [self.indice_name]

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if body.get("indice_name") != self.indice_name:
            raise ValueError(f"unknown indice_name {body.get('indice_name')!r}; served: {self.indice_name!r}")
        if body.get("embedding_input") is None:
            raise ValueError("only embedding_input queries are served")
        query = np.asarray(body["embedding_input"], dtype=np.float32)[None, :]
        result = self.gallery.search(query, int(body.get("num_images", 10)))
        return [
            {"id": int(i), "similarity": float(s), "url": m.get("url", ""), "caption": m.get("caption", "")}
            for i, s, m in zip(result.ids[0], result.scores[0], result.metadata[0], strict=True)
            if i >= 0
        ]

    def __enter__(self) -> KnnServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
