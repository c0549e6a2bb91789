"""`brainbench index serve` as a client meets it: the console script in a subprocess on 127.0.0.1 (a free port),
sent malformed, oversize and half-sent requests over raw sockets, and still answering a good query after.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from brainbench_laion.index import build_index
from brainbench_laion.knn_service import MAX_BODY_BYTES, MAX_NUM_IMAGES
from brainbench_laion.remote import RemoteGallery, knn_request
from brainbench_laion.testing import clustered, write_gallery

DIM = 16
READ_TIMEOUT = 2
CONSOLE = Path(sys.executable).with_name("brainbench")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The real server, serving a 300-row flat index as 'test-index'; yields (port, process, stderr path)."""
    root = tmp_path_factory.mktemp("serve")
    write_gallery(root / "src", clustered(300, DIM, seed=1), shard_rows=150)
    build_index(root / "src", root / "idx", "flat", progress=False)
    out, err = root / "stdout.txt", root / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [str(CONSOLE), "index", "serve", str(root / "idx"), "--port", "0", "--indice-name", "test-index",
             "--read-timeout", str(READ_TIMEOUT), "--keep-alive", "1"],
            stdout=stdout, stderr=stderr, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=root,
        )
    try:
        port = None
        for _ in range(600):  # the URL line, once the index is open (a minute at most)
            found = re.search(r"http://127\.0\.0\.1:(\d+)/knn-service", out.read_text())
            if found:
                port = int(found.group(1))
                break
            assert process.poll() is None, err.read_text()
            time.sleep(0.1)
        assert port is not None, err.read_text()
        yield port, process, err
    finally:
        process.terminate()
        process.wait(timeout=30)


def exchange(port: int, data: bytes, timeout: float = 30) -> tuple[int, str]:
    """Send raw bytes, read one HTTP response: (status, body text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking all of it: read what it said
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode()


def post(port: int, body: bytes | str, headers: str | None = None) -> tuple[int, str]:
    body = body.encode() if isinstance(body, str) else body
    head = headers if headers is not None else f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return exchange(port, f"POST /knn-service HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)


def query(**changes: object) -> str:
    body = knn_request(np.ones(DIM) / 4, 3, "test-index")
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def good_query_works(port: int) -> None:
    result = RemoteGallery(f"http://127.0.0.1:{port}", "test-index").search(clustered(2, DIM, seed=5), 4)
    assert (result.ids >= 0).all() and result.ids.shape == (2, 4)


NAN = query().replace('"embedding_input": [0.25', '"embedding_input": [NaN', 1)
MALFORMED = {
    # name: (body, status, words the message must hold)
    "list body": ("[1, 2, 3]", 400, "must be a JSON object, got a JSON array"),
    "null body": ("null", 400, "must be a JSON object, got a JSON null"),
    "not JSON": ("{embedding_input: 1", 400, "not JSON"),
    "empty body": ("", 400, "empty request body"),
    "3-d embedding": (query(embedding_input=[[[0.1] * DIM]]), 422, "embedding_input.0: Input should be a valid number"),
    "2-d embedding": (query(embedding_input=[[0.1] * DIM]), 422, "embedding_input.0: Input should be a valid number"),
    "NaN embedding": (NAN, 422, "embedding_input.0: Input should be a finite number"),
    "Infinity embedding": (NAN.replace("NaN", "Infinity"), 422, "embedding_input.0: Input should be a finite"),
    "strings in embedding": (query(embedding_input=["0.1"] * DIM), 422, "embedding_input.0"),
    "wrong-length embedding": (query(embedding_input=[0.1] * (DIM - 1)), 422,
                               f"embedding_input: {DIM - 1} values, but the index holds {DIM}-d"),
    "empty embedding": (query(embedding_input=[]), 422, "embedding_input"),
    "num_images 0": (query(num_images=0), 422, f"num_images: must be an integer from 1 to {MAX_NUM_IMAGES} (got 0)"),
    "num_images -5": (query(num_images=-5), 422, "num_images: must be an integer from 1 to"),
    "num_images 1e9": (query().replace('"num_images": 3', '"num_images": 1e9'), 422, "num_images"),
    "num_images 1e6 as integer": (query(num_images=10**6), 422, "num_images: must be an integer from 1 to 1000"),
    "num_images 2.5": (query(num_images=2.5), 422, "num_images: Input should be a valid integer"),
    "num_images a string": (query(num_images="10"), 422, "num_images: Input should be a valid integer"),
    "missing embedding_input": (query(embedding_input=...), 422, "embedding_input: required field missing"),
    "missing num_images": (query(num_images=...), 422, "num_images: required field missing"),
    "missing indice_name": (query(indice_name=...), 422, "indice_name: required field missing"),
    "unknown indice_name": (query(indice_name="other"), 400, "unknown indice_name 'other'; served: 'test-index'"),
    "text query": (query(text="a cat"), 422, "text: Value error, only embedding_input queries are served"),
    "text modality": (query(modality="text"), 422, "modality"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_gets_a_4xx_naming_the_field(server, case):
    port, _, _ = server
    body, status, words = MALFORMED[case]
    got, text = post(port, body)
    assert got == status, text
    assert words in json.loads(text)["error"], text


def test_malformed_requests_leave_no_traceback_and_the_server_answering(server):
    port, process, stderr = server
    for body, _, _ in MALFORMED.values():
        post(port, body)
    good_query_works(port)
    assert process.poll() is None and "Traceback" not in stderr.read_text()


def test_unknown_paths_and_methods_answer_json(server):
    port, _, _ = server
    status, text = exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404 and json.loads(text) == {"error": "unknown path /nope"}
    status, text = exchange(port, b"GET /knn-service HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and "error" in json.loads(text)
    status, text = exchange(port, b"GET /indices-list HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(text) == ["test-index"]


@pytest.mark.parametrize("length", [MAX_BODY_BYTES + 1, 10**12])
def test_an_oversize_content_length_is_refused_before_the_body_is_sent(server, length):
    port, _, _ = server
    # Headers only: the 413 must come without the server waiting for (or reading) the body.
    status, text = post(port, b"", headers=f"Content-Type: application/json\r\nContent-Length: {length}\r\n")
    assert status == 413 and f"request body of {length} bytes; the limit is {MAX_BODY_BYTES}" in text


def test_an_oversize_chunked_body_is_cut_off(server):
    port, _, _ = server
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 8))
    status, text = post(port, body + b"0\r\n\r\n", headers="Transfer-Encoding: chunked\r\n")
    assert status == 413 and f"over the {MAX_BODY_BYTES}-byte limit" in text


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_an_invalid_content_length_is_a_400(server, value):
    port, _, _ = server
    status, _ = post(port, b"{}", headers=f"Content-Length: {value}\r\n")
    assert status == 400


def test_a_post_without_content_length_is_an_empty_body(server):
    port, _, _ = server
    status, text = post(port, b"", headers="Content-Type: application/json\r\n")
    assert status == 400 and "empty request body" in text


def test_half_sent_requests_are_closed_after_the_read_timeout(server):
    """300 clients that never finish their request: each gets 408 and is closed; nothing stays behind."""
    port, process, _ = server
    good_query_works(port)
    server_process = psutil.Process(process.pid)
    threads_before = server_process.num_threads()
    partial = [
        b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Le",  # headers cut short
        b"POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"embedding",  # body cut short
        b"",  # connected, sent nothing
    ]
    sockets = []
    for index in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(partial[index % len(partial)])
        sockets.append(sock)
    try:
        answers = []
        for sock in sockets:  # each read returns once the server has answered and closed (or 60 s pass)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            answers.append(data)
    finally:
        for sock in sockets:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"request not received within 2 s" in a for a in answers), \
        {a[:60] for a in answers}
    open_connections = [c for c in server_process.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED]
    assert open_connections == []
    assert server_process.num_threads() <= threads_before + 2  # no thread per connection
    good_query_works(port)


def test_an_idle_keep_alive_connection_is_closed(server):
    port, _, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /indices-list HTTP/1.1\r\nHost: x\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200 and response.getheader("connection") != "close"
        response.read()
        assert sock.recv(1) == b""  # closed by the server after --keep-alive 1 s, not by us
