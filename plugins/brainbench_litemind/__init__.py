"""Built-in plugin: Lite-Mind (DFT backbone) encoder."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    register("litemind", "brainbench_litemind.encoder:LiteMindEncoder",
             description="Lite-Mind: DFT backbone (Gong et al., ACM MM 2024)")
