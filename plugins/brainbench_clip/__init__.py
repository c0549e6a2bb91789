"""Built-in plugin: CLIP targets (embeddings stored with a dataset, and open_clip ViT-L/14)."""

from brainbench import hookimpl


@hookimpl
def register_targets(register):
    def stored(tokens: bool):
        def make(**options):
            from brainbench_clip.stored import StoredTarget

            return StoredTarget(tokens=tokens, **options)

        return make

    def open_clip_target(tokens: bool):
        def make(**options):
            from brainbench_clip.openclip import OpenClipTarget

            return OpenClipTarget(tokens=tokens, **options)

        return make

    register(
        "synthetic-clip",
        stored(False),
        description="CLIP-like pooled 768-d embeddings stored with the data",
        options="brainbench_clip.stored:StoredTarget",
    )
    register(
        "synthetic-clip-tokens",
        stored(True),
        description="CLIP-like 257x768 token embeddings stored with the data",
        options="brainbench_clip.stored:StoredTarget",
    )
    register(
        "clip-vit-l-14",
        open_clip_target(False),
        description="OpenAI CLIP ViT-L/14 pooled 768-d image embeddings (open_clip, local weights, cached)",
        options="brainbench_clip.openclip:OpenClipTarget",
    )
    register(
        "clip-vit-l-14-tokens",
        open_clip_target(True),
        description="OpenAI CLIP ViT-L/14 257x768 token embeddings after ln_post and projection (open_clip)",
        options="brainbench_clip.openclip:OpenClipTarget",
    )


@hookimpl
def register_commands(app):
    from brainbench_clip.commands import targets_app

    app.add_typer(targets_app, name="targets")
