"""`janus-edge triton-repo DIR OUT_DIR`: a Triton Inference Server model repository (Python backend) for an export."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("export_dir", help="an export directory (onnxruntime) or an engine directory (tensorrt)")
    parser.add_argument("out_dir", help="the model repository to write (new or empty)")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    parser.add_argument("--provider", action="append", default=None,
                        help="ONNX Runtime execution provider inside the server, e.g. CUDAExecutionProvider")
    parser.add_argument("--reference-export", action="store_true",
                        help="point the models at DIR's absolute path instead of copying it into the repository")
    parser.add_argument("--instances", type=int, default=1, help="model instances per server (each loads the model)")


def run(args) -> int:
    from janus_edge.serve.triton_repo import write_repository

    models = write_repository(args.export_dir, args.out_dir, args.backend, args.provider, args.reference_export,
                              args.instances)
    print(f"wrote {len(models)} models to {args.out_dir}: {', '.join(m.name for m in models)}")
    print(f"run: tritonserver --model-repository {args.out_dir}  (see docs/serving.md)")
    return 0
