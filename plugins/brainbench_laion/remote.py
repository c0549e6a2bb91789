"""clip-retrieval's HTTP protocol: a client with the local index's search interface, and a small server.

Request: ``POST {url}/knn-service`` with a JSON body holding one ``embedding_input`` and the service
options; answer: a JSON list of ``{"id", "similarity", "url", "caption"}``, best first.
"""

from __future__ import annotations

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
    """A clip-retrieval back end queried over HTTP, one request per query embedding."""

    def __init__(self, url: str, indice_name: str = DEFAULT_INDICE, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.indice_name = indice_name
        self.timeout = timeout
        self.name = f"{self.url} ({indice_name})"

    def _post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.url}/knn-service",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.url}/knn-service: no valid answer ({exc})") from exc
        if isinstance(answer, dict) and "error" in answer:
            raise DataError(f"{self.url}/knn-service: back end error: {answer['error']}")
        if not isinstance(answer, list):
            raise DataError(
                f"{self.url}/knn-service: expected a JSON list of results, got {type(answer).__name__}"
            )
        return answer

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        queries = normalise(np.atleast_2d(queries))
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -1.0, dtype=np.float32)
        metadata: list[list[dict]] = []
        for row, query in enumerate(queries):
            answer = self._post(knn_request(query, k, self.indice_name))[:k]
            for col, item in enumerate(answer):
                try:
                    ids[row, col], scores[row, col] = int(item["id"]), float(item["similarity"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise DataError(f"{self.url}/knn-service: result lacks id/similarity: {item!r}") from exc
            metadata.append([dict(item) for item in answer])
        return SearchResult(ids, scores, metadata)

    def describe(self) -> dict[str, Any]:
        return {"kind": "remote", "url": self.url, "indice_name": self.indice_name}


class KnnServer:
    """Serves a local gallery over clip-retrieval's ``/knn-service`` protocol in a background thread.

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
