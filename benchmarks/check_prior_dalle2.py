"""Prior ``diffusion`` against dalle2-pytorch at the references' size: the largest absolute difference of each
output when both hold one state dict (random weights) and draw from one seed.

    python benchmarks/check_prior_dalle2.py [--null-tokens 0] [--batch 8]

MindEye's prior network: width 768, 6 blocks, 12 heads of 64, causal, 100 steps, condition dropped with
probability 0.2 (dalle2-pytorch's network is always causal; Lite-Mind's non-causal variant is ours alone).
tests/test_prior_dalle2.py runs the same comparisons at a small size.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-tokens", type=int, default=0, help="dalle2-pytorch's max_text_len (its default: 256)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    from dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork

    from brainbench_prior.backends import Architecture, OursBackend

    dim, depth, dim_head, heads, steps = 768, 6, 64, 12, 100
    torch.manual_seed(0)
    library = DiffusionPrior(
        DiffusionPriorNetwork(dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_timesteps=steps,
                              max_text_len=args.null_tokens),
        image_embed_dim=dim, timesteps=steps, cond_drop_prob=0.2, condition_on_text_encodings=False,
    )
    ours = OursBackend(Architecture(dim, depth, dim_head, heads, 4.0, args.null_tokens, True, steps, 0.2)).module
    ours.load_state_dict(library.state_dict(), strict=True)
    n_parameters = sum(p.numel() for p in library.parameters() if p.requires_grad)
    print(f"MindEye-size prior: {n_parameters:,} parameters, null tokens {args.null_tokens}, batch {args.batch}")
    print(f"state dict: {len(library.state_dict())} tensors, loaded into ours strictly (every key, every shape)")

    g = torch.Generator().manual_seed(1)
    brain = F.normalize(torch.randn(args.batch, dim, generator=g), dim=-1)
    image = F.normalize(torch.randn(args.batch, dim, generator=g), dim=-1)
    noised = torch.randn(args.batch, dim, generator=g) * 5
    times = torch.randint(0, steps, (args.batch,), generator=g)

    def row(what: str, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.detach(), b.detach()
        print(f"| {what} | {float((a - b).abs().max()):.2e} | {float(a.abs().max()):.3f} |")

    print("\n| compared | max abs difference | max abs value |\n|---|---:|---:|")
    with torch.no_grad():
        row("denoiser pass (x0 prediction)", library.net(noised, times, text_embed=brain),
            ours.net(noised, times, brain))
        row("guided pass, cond_scale 3",
            library.net.forward_with_cond_scale(noised, times, text_embed=brain, cond_scale=3.0),
            ours.net.guided(noised, times, brain, 3.0))
    torch.manual_seed(7)
    expected = library(text_embed=brain, image_embed=image.clone())
    got = ours.loss(brain, image, torch.Generator().manual_seed(7))
    row("training loss (random steps, noise, condition drops)", expected, got)
    expected.backward()
    got.backward()
    theirs = dict(library.named_parameters())
    worst = max(float((p.grad - theirs[n].grad).abs().max()) for n, p in ours.named_parameters()
                if p.grad is not None and p.numel())
    print(f"| gradients, every parameter | {worst:.2e} | |")
    for sample_steps, scale in ((20, 1.0), (100, 1.0), (20, 2.0)):
        started = time.perf_counter()
        torch.manual_seed(11)
        a = library.p_sample_loop((args.batch, dim), text_cond={"text_embed": brain}, cond_scale=scale,
                                  timesteps=sample_steps)
        middle = time.perf_counter()
        b = ours.sample(brain, sample_steps, scale, torch.Generator().manual_seed(11))
        kind = "DDIM" if sample_steps < steps else "ancestral"
        row(f"full sample, {kind} {sample_steps} steps, cond_scale {scale:g} "
            f"({middle - started:.1f} s library, {time.perf_counter() - middle:.1f} s ours)", a, b)


if __name__ == "__main__":
    main()
