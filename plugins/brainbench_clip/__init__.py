"""Built-in plugin: CLIP targets (embeddings stored with a dataset, and open_clip ViT-L/14)."""

from brainbench import hookimpl


@hookimpl
def register_targets(register):
    register("synthetic-clip", "brainbench_clip.stored:StoredTarget",
             description="CLIP-like pooled 768-d embeddings stored with the data")
    register("synthetic-clip-tokens", "brainbench_clip.stored:StoredTokensTarget",
             description="CLIP-like 257x768 token embeddings stored with the data")
    register("clip-vit-l-14", "brainbench_clip.openclip:OpenClipTarget",
             description="OpenAI CLIP ViT-L/14 pooled 768-d image embeddings (open_clip, local weights, cached)")
    register("clip-vit-l-14-tokens", "brainbench_clip.openclip:OpenClipTokensTarget",
             description="OpenAI CLIP ViT-L/14 257x768 token embeddings after ln_post and projection (open_clip)")


@hookimpl
def register_commands(app):
    from brainbench_clip.commands import targets_app

    app.add_typer(targets_app, name="targets")
