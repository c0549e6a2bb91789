"""Built-in plugin: Lite-Mind (DFT backbone) encoder."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    def litemind(**options):
        from brainbench_litemind.encoder import LiteMindEncoder

        return LiteMindEncoder(**options)

    register(
        "litemind",
        litemind,
        description="Lite-Mind: DFT backbone (Gong et al., ACM MM 2024)",
        options="brainbench_litemind.encoder:LiteMindEncoder",
    )
