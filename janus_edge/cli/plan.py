"""`janus-edge plan --model janus-pro-1b|janus-pro-7b|janusflow-1.3b|MODEL_DIR --target T --precision P [--context N]
[--images N]`"""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    from janus_edge.export.tensorrt.targets import TARGETS

    parser.add_argument("--model", required=True, help="janus-pro-1b, janus-pro-7b, janusflow-1.3b or a Janus checkpoint directory")
    parser.add_argument("--target", required=True, choices=list(TARGETS))
    parser.add_argument("--precision", default="fp16",
                        help="as export/calibrate make it: fp32, fp16, int8, w8, w4 or a combination (int8,w4,fp16)")
    parser.add_argument("--context", type=int, default=None, help="tokens per row (default: the target's limit)")
    parser.add_argument("--images", type=int, default=1, help="images per generation request (2 CFG rows each)")
    parser.add_argument("--json", default=None, help="also write the plan as JSON")


def run(args) -> int:
    from janus_edge.export.tensorrt.targets import target
    from janus_edge.plan import format_plan, make_plan, plan_model

    dims, flow = plan_model(args.model)
    chosen = target(args.target)
    plan = make_plan(args.model, dims, chosen, args.precision, args.context or chosen.max_context, args.images,
                     flow=flow)
    print(format_plan(plan))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(plan.to_dict(), f, indent=2)
    return 0
