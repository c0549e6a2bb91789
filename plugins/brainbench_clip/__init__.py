"""Built-in plugin: CLIP targets (embeddings stored with a dataset, and open_clip ViT-L/14)."""

from brainbench import hookimpl


@hookimpl
def register_targets(register):
    def stored(tokens: bool):
        def make(**options):
            from brainbench_clip.stored import StoredTarget

            return StoredTarget(tokens=tokens, **options)

        return make

    register("synthetic-clip", stored(False), description="CLIP-like pooled 768-d embeddings stored with the data")
    register(
        "synthetic-clip-tokens", stored(True), description="CLIP-like 257x768 token embeddings stored with the data"
    )
