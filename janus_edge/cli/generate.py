"""`janus-edge generate EXPORT_DIR --prompt TEXT [-n 4] [--seed S] [--speculative MODE] --out DIR`: images, a grid,
a progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from janus_edge.cli.runtime_options import add_runtime_arguments, load_runtime
from janus_edge.runtime.pipelines.speculative import DEFAULT_WINDOW, MODES


def add_arguments(parser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--prompt", required=True, help="what to draw")
    parser.add_argument("-n", type=int, default=4, help="number of images (2 decoder rows each for CFG)")
    parser.add_argument("--out", required=True, help="directory for the PNG files")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cfg-weight", type=float, default=None, help="classifier-free guidance (default 5)")
    parser.add_argument("--temperature", type=float, default=None, help="default 1; 0 takes the argmax token")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--speculative", default=None, choices=MODES,
                        help="decode a window of draft tokens per decoder pass (same distribution, fewer passes; "
                             "docs/SPECULATIVE.md)")
    parser.add_argument("--window", type=int, default=None,
                        help=f"positions per decoder pass with --speculative (default {DEFAULT_WINDOW})")
    parser.add_argument("--steps", type=int, default=None, help="JanusFlow: Euler steps of the flow (default 30)")
    parser.add_argument("--initial-latents", default=None, metavar="FILE.npy",
                        help="JanusFlow: start from these latents [n,4,48,48] (sets n) instead of seeded noise")


def progress_bar(label: str):
    """A one-line bar on a terminal; a line per quarter when stderr is a file or pipe (logs, CI)."""
    start, interactive = time.perf_counter(), sys.stderr.isatty()

    def show(step: int, total: int) -> None:
        if (step % 8 if interactive else step % max(total // 4, 1)) and step != total:
            return
        filled = 30 * step // total
        rate = step / max(time.perf_counter() - start, 1e-9)
        line = f"{label} [{'#' * filled}{'.' * (30 - filled)}] {step}/{total} steps, {rate:.2f} steps/s"
        sys.stderr.write(f"\r{line}" + ("\n" if step == total else "") if interactive else line + "\n")
        sys.stderr.flush()

    return show


def save_images(result, out: Path, stem: str = "image") -> list[Path]:
    from janus_edge.runtime.images import make_grid

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(result.images):
        paths.append(out / f"{stem}_{i}.png")
        image.save(paths[-1])
    paths.append(out / f"{stem}_grid.png")
    make_grid(result.images).save(paths[-1])
    return paths


def run(args) -> int:
    from janus_edge.runtime.errors import RequestError

    if Path(args.out).exists() and not Path(args.out).is_dir():  # found before minutes of generation, not after
        raise RequestError(f"--out {args.out} is a file", "pass a directory for the PNG files")
    runtime = load_runtime(args)
    given = {"steps": args.steps, "initial_latents": _latents(args.initial_latents),
             "speculative": args.speculative, "window": args.window}
    result = runtime.generate_images(args.prompt, n=args.n, cfg_weight=args.cfg_weight,
                                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                     seed=args.seed, progress=progress_bar("generating"),
                                     **{k: v for k, v in given.items() if v is not None})
    paths = save_images(result, Path(args.out))
    print(f"saved {len(result.images)} images and a grid: {', '.join(str(p) for p in paths)}")
    if result.speculative:
        print(speculative_line(result.speculative))
    return 0


def speculative_line(summary: dict) -> str:
    """One line on what speculative decoding did (bench prints the same)."""
    return (f"speculative {summary['mode']} (window {summary['window']}): {summary['decoder_passes']} decoder passes, "
            f"{summary['tokens_per_pass_mean']:.2f} tokens per pass per image")


def _latents(path: str | None):
    import numpy as np

    from janus_edge.runtime.errors import RequestError

    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RequestError(f"--initial-latents {path} cannot be read as a .npy array ({exc})",
                           "save the latents with numpy.save") from None
