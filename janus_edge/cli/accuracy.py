"""`janus-edge accuracy REFERENCE_EXPORT CANDIDATE_EXPORT [--json out.json]`"""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("reference", help="the fp32 export")
    parser.add_argument("candidate", help="a reduced-precision export of the same model (from calibrate)")
    parser.add_argument("--images", default=None, help="folder of photographs (default: scikit-image's)")
    parser.add_argument("--prompts", default=None, help="file of prompts, one per line")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--answer-tokens", type=int, default=24,
                        help="longest answer scored per question (an answer may end earlier at EOS)")
    parser.add_argument("--json", default=None, help="also write the report as JSON")


def run(args) -> int:
    from janus_edge.calibration.accuracy import accuracy, format_report

    report = accuracy(args.reference, args.candidate, args.images, args.prompts, args.samples, args.answer_tokens)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
