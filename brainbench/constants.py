"""Published facts about the datasets that commands need without opening any file, and the names plugins
share (so no plugin spells another's strings)."""

#: Keys of ``Dataset.stored_embeddings``: CLIP image embeddings stored with the data, pooled (n, 768) and
#: tokens (n, 257, 768). A dataset that stores either answers to these keys; targets read them.
EMBEDDING_POOLED = "clip-pooled"
EMBEDDING_TOKENS = "clip-tokens"

#: A run's per-item outcomes (JSON), written by the runner and read back by ``compare`` to pair runs by item.
PER_ITEM_FILE = "per_item.json"

#: A run folder's lock file: held by the run writing in it, and by `brainbench log` replaying its journal.
RUN_LOCK = ".run.lock"

#: nsdgeneral voxel counts per NSD subject (MindEye's preprocessing).
NSD_VOXELS: dict[int, int] = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}
