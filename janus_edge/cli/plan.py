"""`janus-edge plan --model janus-pro-1b|janus-pro-7b|janusflow-1.3b|MODEL_DIR --target T --precision P [--context N]
[--images N] [--speculative-window W]`, or `janus-edge plan --model ENGINE_DIR [--context N] [--images N]
[--speculative-window W]` (what `build` recorded)."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    from janus_edge.export.tensorrt.targets import TARGETS

    parser.add_argument("--model", required=True, help="janus-pro-1b, janus-pro-7b, janusflow-1.3b, a Janus checkpoint "
                        "directory or an engine directory (janus-edge build's)")
    parser.add_argument("--target", default=None, choices=list(TARGETS), help="required unless --model is an engine "
                        "directory (its engines' target)")
    parser.add_argument("--precision", default="fp16",
                        help="as export/calibrate make it: fp32, fp16, int8, w8, w4 or a combination (int8,w4,fp16)")
    parser.add_argument("--context", type=int, default=None, help="tokens per row (default: the target's limit)")
    parser.add_argument("--images", type=int, default=1, help="images per generation request (2 CFG rows each)")
    parser.add_argument("--speculative-window", type=int, default=None, metavar="W",
                        help="also count speculative decoding's verify pass of W positions (memory and its floor)")
    parser.add_argument("--json", default=None, help="also write the plan as JSON")


def run(args) -> int:
    from pathlib import Path

    from janus_edge.export.tensorrt.targets import target
    from janus_edge.plan import format_plan, make_plan, plan_engines, plan_model
    from janus_edge.runtime.backends.engine_manifest import ENGINE_MANIFEST, EngineManifest
    from janus_edge.runtime.errors import RequestError

    if (Path(args.model) / ENGINE_MANIFEST).is_file():
        built = EngineManifest.read(Path(args.model)).build_options
        plan = plan_engines(args.model, args.images, args.context or built["max_context"], args.speculative_window)
    else:
        if args.target is None:
            raise RequestError("--target is needed to plan a model (it is read from an engine directory)",
                               "add --target orin-nano-8gb (or another target)")
        dims = plan_model(args.model)
        chosen = target(args.target)
        plan = make_plan(args.model, dims, chosen, args.precision, args.context or chosen.max_context, args.images,
                         window=args.speculative_window)
    print(format_plan(plan))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(plan.to_dict(), f, indent=2)
    return 0
