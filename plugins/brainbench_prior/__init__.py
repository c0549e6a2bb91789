"""Built-in plugin: diffusion priors (brain embedding -> CLIP image embedding) for LAION retrieval.

Registrations only: torch and the optional dalle2-pytorch are imported by the modules these names load.
"""

from brainbench import hookimpl


@hookimpl
def register_priors(register):
    register("diffusion", "brainbench_prior.prior:DiffusionPrior",
             description="DALL-E-2-style diffusion prior (MindEye / Lite-Mind), our torch implementation")
    register("dalle2", "brainbench_prior.prior:Dalle2Prior",
             description="the same prior run by dalle2-pytorch's own classes (needs dalle2-pytorch installed)")
