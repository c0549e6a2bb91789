"""The clip-retrieval HTTP back end: our client against a local /knn-service server over a real index."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench.interfaces import EvalContext
from brainbench_laion.index import LocalIndex, build_index
from brainbench_laion.remote import KnnServer, RemoteGallery, knn_request
from brainbench_laion.simulate import simulate_for_dataset
from brainbench_laion.task import LaionTask
from brainbench_laion.testing import FakeDataset, clustered, write_gallery

PROTOCOL_FIELDS = {
    "embedding_input",
    "modality",
    "indice_name",
    "num_images",
    "num_result_ids",
    "use_mclip",
    "deduplicate",
    "use_safety_model",
    "use_violence_detector",
    "aesthetic_score",
    "aesthetic_weight",
    "text",
    "image",
    "image_url",
}


@pytest.fixture
def local_index(tmp_path):
    write_gallery(tmp_path / "src", clustered(500, 16, seed=7), shard_rows=200)
    build_index(tmp_path / "src", tmp_path / "idx", "flat", progress=False)
    return LocalIndex.open(tmp_path / "idx")


class RecordingServer(KnnServer):
    def answer(self, body):
        self.last_body = body
        return super().answer(body)


def test_remote_search_equals_local_search(local_index):
    queries = clustered(6, 16, seed=8)
    with KnnServer(local_index, indice_name="test-index") as server:
        assert server.url.startswith("http://127.0.0.1:")
        remote = RemoteGallery(server.url, "test-index").search(queries, 4)
    local = local_index.search(queries, 4)
    np.testing.assert_array_equal(remote.ids, local.ids)
    np.testing.assert_allclose(remote.scores, local.scores, atol=1e-6)
    assert [m["url"] for m in remote.metadata[0]] == [m["url"] for m in local.metadata[0]]
    assert set(remote.metadata[0][0]) == {"id", "similarity", "url", "caption"}


def test_client_sends_the_protocol_body(local_index):
    with RecordingServer(local_index, indice_name="laion5B-L-14") as server:
        RemoteGallery(server.url).search(clustered(1, 16, seed=9), 3)
    body = server.last_body
    assert set(body) == PROTOCOL_FIELDS
    assert body["modality"] == "image" and body["num_images"] == 3 and body["use_mclip"] is False
    assert len(body["embedding_input"]) == 16
    assert abs(np.linalg.norm(body["embedding_input"]) - 1) < 1e-5  # queries go out normalised


def test_back_end_errors_are_data_errors(local_index):
    with KnnServer(local_index, indice_name="served") as server:
        with pytest.raises(DataError, match="serves no index 'other-name'.* It serves: served"):
            RemoteGallery(server.url, "other-name").search(clustered(1, 16), 2)
        request = urllib.request.Request(
            f"{server.url}/knn-service",
            data=json.dumps(knn_request(np.ones(16), 2, "served")).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert len(json.loads(response.read())) == 2
    with pytest.raises(DataError, match="no valid answer"):
        RemoteGallery(server.url, timeout=2).search(clustered(1, 16), 2)  # server is gone


def test_task_scores_through_a_remote_gallery(tmp_path):
    dataset = FakeDataset(dim=16)
    simulate_for_dataset(dataset, 400, tmp_path / "gal", shard_rows=150)
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    test_ids = dataset.trials(1, "test").stimulus_ids
    truth = dataset.embeddings[test_ids]
    ctx = EvalContext(
        truth.copy(), truth, test_ids, dataset, target=None, subject=1, seed=0, output_dir=tmp_path / "out"
    )
    with KnnServer(LocalIndex.open(tmp_path / "idx")) as server:
        results = {r.name: r for r in LaionTask(remote=server.url, k=4).evaluate(ctx)}
    # The protocol carries no embeddings or categories: only the ground-truth scores remain (via the urls).
    assert set(results) == {"query_cosine", "gt_top1", "gt_recall_at_k"}  # query_cosine needs no gallery
    assert results["gt_top1"].value == 1.0
    assert (tmp_path / "out" / "laion_retrieval.png").exists()


class TwoIndexServer(KnnServer):
    def indices(self):
        return ["laion5B-L-14", "laion400m"]


class FailingServer(KnnServer):
    def answer(self, body):
        raise KeyError("faiss index not loaded")  # becomes HTTP 400 with the reason in the body


def test_indices_list_is_served_and_the_only_index_is_used(local_index):
    with RecordingServer(local_index, indice_name="my-gallery") as server:
        with urllib.request.urlopen(f"{server.url}/indices-list", timeout=10) as response:
            assert json.loads(response.read()) == ["my-gallery"]
        remote = RemoteGallery(server.url)
        assert remote.check() == "my-gallery"
        remote.search(clustered(1, 16, seed=3), 2)
    assert server.last_body["indice_name"] == "my-gallery"


def test_several_indexes_ask_the_user_to_choose(local_index):
    with TwoIndexServer(local_index, indice_name="laion400m") as server:
        with pytest.raises(DataError, match="serves 2 indexes: laion5B-L-14, laion400m; choose one with"):
            RemoteGallery(server.url).check()
        assert RemoteGallery(server.url, "laion400m").check() == "laion400m"
        with pytest.raises(DataError, match="did you mean 'laion400m'"):
            RemoteGallery(server.url, "laion400").check()


def test_http_errors_carry_the_back_ends_reason(local_index):
    with FailingServer(local_index, indice_name="x") as server:
        with pytest.raises(DataError, match="HTTP 400.*faiss index not loaded"):
            RemoteGallery(server.url).search(clustered(1, 16), 2)


def test_a_run_that_computes_no_metric_fails_with_the_reasons(tmp_path, local_index):
    """A back end whose items are not the dataset's stimuli (a user's LAION): nothing can be scored."""
    dataset = FakeDataset(dim=16)
    test_ids = dataset.trials(1, "test").stimulus_ids
    truth = dataset.embeddings[test_ids]
    ctx = EvalContext(
        truth.copy(), truth, test_ids, dataset, target=None, subject=1, seed=0, output_dir=tmp_path / "out"
    )
    with KnnServer(local_index, indice_name="unrelated") as server:
        task = LaionTask(remote=server.url, k=4)
        task.check_ready()
        with pytest.raises(DataError, match="none of its metrics could be computed") as err:
            task.evaluate(ctx)
    assert "no test stimulus is in the gallery" in str(err.value)
    assert "candidate images not available" in str(err.value)


def test_an_unreachable_back_end_stops_the_run_before_mlflow(tmp_path):
    import socket

    from tests.conftest import run_cli

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "m.db"
    result = run_cli(
        "run", "ridge", "--task", "laion", "--task-opt", f"remote=http://127.0.0.1:{port}",
        "--dataset-opt", "scale=tiny", "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"http://127.0.0.1:{port}/indices-list: no valid answer" in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()
