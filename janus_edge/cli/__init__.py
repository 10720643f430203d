"""`janus-edge`: one command per module; each module has `add_arguments(parser)` and `run(args) -> int`.

Commands are imported only when chosen, so `janus-edge understand` on a Jetson never imports torch.
A user error (`JanusEdgeError`) prints one line and exits 2, and so does a library missing from the user's install
(naming the pyproject extra that provides it); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import re
import sys

COMMANDS = {
    "tiny": "write the embedded default model: a tiny random-weight Janus-Pro checkpoint",
    "export": "export a checkpoint to ONNX graphs + janus_edge.json",
    "compare": "check every exported graph against the PyTorch reference",
    "calibrate": "make a reduced-precision export (int8, w8, w4, fp16, kv8) from an fp32 one",
    "accuracy": "measure a reduced-precision export against the fp32 one",
    "check-trt": "check that TensorRT's ONNX parser supports every node of an export",
    "build": "build TensorRT engines from an export for a target GPU",
    "understand": "answer a question about images (streams the answer)",
    "generate": "generate images from a text prompt",
    "demo": "make the tiny model, export it, answer a question and generate images",
    "bench": "measure latency and memory of exports (and the PyTorch reference) side by side",
    "plan": "memory budget and latency floors of a model on a target",
    "verify": "hash every file of an export against its manifest (loading re-hashes only changed files)",
    "serve": "serve an export over HTTP with an OpenAI-compatible API",
    "triton-repo": "write a Triton Inference Server model repository (Python backend) for an export",
    "gpu-check": "check this GPU machine: engines and pipelines against ONNX Runtime, memory, versions (send back)",
}


def main(argv: list[str] | None = None) -> int:
    from janus_edge import __version__

    parser = argparse.ArgumentParser(prog="janus-edge", description="Janus-Pro on NVIDIA edge and data-center GPUs")
    parser.add_argument("--version", action="version", version=f"janus-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    from janus_edge.runtime.errors import JanusEdgeError

    try:
        for name, help_text in COMMANDS.items():
            command_parser = sub.add_parser(name, help=help_text, description=help_text)
            if name == chosen:
                _module(name).add_arguments(command_parser)
        args = parser.parse_args(argv)
        return int(_module(args.command).run(args) or 0)
    except JanusEdgeError as exc:
        fix = f"; fix: {exc.hint}" if exc.hint else ""
        print(f"janus-edge {chosen}: error: {exc.message}{fix}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = missing_extra(chosen, exc)
        if extra is None:
            raise
        print(f"janus-edge {chosen}: error: {exc.name} is not installed; fix: pip install 'janus-edge[{extra}]'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _module(name: str):
    return importlib.import_module(f"janus_edge.cli.{name.replace('-', '_')}")


# Import names whose distribution is called otherwise; every other module is its distribution's name.
DISTRIBUTIONS = {"PIL": "pillow", "skimage": "scikit-image", "cuda": "cuda-python"}
# The extra each command's libraries come from, preferred when a missing library is in several extras.
COMMAND_EXTRAS = {"tiny": "export", "export": "export", "compare": "export", "calibrate": "export",
                  "accuracy": "export", "bench": "export", "demo": "export", "check-trt": "tensorrt",
                  "build": "tensorrt", "gpu-check": "tensorrt", "serve": "serve"}


def missing_extra(command: str | None, error: ModuleNotFoundError) -> str | None:
    """The pyproject extra (read from the installed metadata) that provides the library an import did not find;
    None when the library is installed (a broken import) or in no extra (a bug), which keep their traceback."""
    module = (error.name or "").partition(".")[0]
    if not module or module == "janus_edge" or importlib.util.find_spec(module) is not None:
        return None
    extras = extras_providing(_normalise(DISTRIBUTIONS.get(module, module)))
    preferred = COMMAND_EXTRAS.get(command or "")
    return preferred if preferred in extras else (extras[0] if extras else None)


def extras_providing(distribution: str) -> list[str]:
    """The extras of the installed janus-edge that install `distribution`: directly first, then those that include
    such an extra (`janus-edge[onnxruntime]` inside `export`)."""
    try:
        requirements = importlib.metadata.requires("janus-edge") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    members: dict[str, set[str]] = {}  # extra -> the distributions it lists, and "[extra]" for each extra it includes
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", marker)
        name = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^]]*)\])?", spec)
        if extra and name:
            own = _normalise(name.group(1)) == "janus-edge"
            found = {f"[{x.strip()}]" for x in (name.group(2) or "").split(",")} if own else {_normalise(name.group(1))}
            members.setdefault(extra.group(1), set()).update(found)
    direct = [extra for extra, found in members.items() if distribution in found]
    return direct + [extra for extra, found in members.items()
                     if extra not in direct and any(f"[{d}]" in found for d in direct)]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()
