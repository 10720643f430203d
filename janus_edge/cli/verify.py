"""`janus-edge verify DIR`: hash every file of an export or engine directory against its manifest.

Loading re-hashes only files whose size or timestamps changed since the last check; this command re-hashes all
of them (after copying an export between machines, say). Exit 0 if all match; a mismatch is a user error (exit 2).
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="an export directory (janus_edge.json) or an engine directory")


def run(args) -> int:
    from janus_edge.runtime.manifest import load_manifest

    manifest = load_manifest(args.directory, verify=True, full_check=True)
    print(f"{args.directory}: all {len(manifest.files)} files match their sha256 in the manifest")
    return 0
