"""Built-in plugin: diffusion priors (brain embedding -> CLIP image embedding) for LAION retrieval.

Registrations only: torch and the optional dalle2-pytorch are imported by the modules these functions load.
"""

from brainbench import hookimpl


@hookimpl
def register_priors(register):
    def diffusion(**options):
        from brainbench_prior.prior import DiffusionPrior

        return DiffusionPrior(**options)

    def dalle2(**options):
        from brainbench_prior.prior import Dalle2Prior

        return Dalle2Prior(**options)

    register(
        "diffusion",
        diffusion,
        description="DALL-E-2-style diffusion prior (MindEye / Lite-Mind), our torch implementation",
        options="brainbench_prior.prior:DiffusionPrior",
    )
    register(
        "dalle2",
        dalle2,
        description="the same prior run by dalle2-pytorch's own classes (needs dalle2-pytorch installed)",
        options="brainbench_prior.prior:Dalle2Prior",
    )
