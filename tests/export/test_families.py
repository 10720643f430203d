"""Adding a model family is one module and one `register` call: a toy third family, defined in this module alone
(a Janus-Pro variant with other dims), is written by `janus-edge tiny`, exported, compared and planned through the
same commands as the built-in families, and the registry stays torch-free."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from janus_edge.cli import main
from janus_edge.export.configs import PRESETS
from janus_edge.export.families import FAMILIES, MODELS, family_named, graph_parameters, register
from janus_edge.export.families.janus import JanusFamily
from janus_edge.export.tensorrt.targets import GIB
from janus_edge.runtime.manifest import ModelInfo, load_manifest

MARKER = "toy_family"  # the key a toy checkpoint's config.json carries
# Other widths, depths and heads than any Janus preset (head_dim 32, 3 layers, a 1-layer 48-wide vision tower).
TOY = dataclasses.replace(PRESETS["tiny"], family="toy-janus", hidden_size=96, num_heads=3, num_kv_heads=3, head_dim=32,
                          intermediate_size=160, num_layers=3, vision_hidden_size=48, vision_layers=1, vision_heads=3,
                          vision_intermediate_size=192)
TOY_FULL = dataclasses.replace(TOY, vocab_size=102400, hidden_size=3072, num_heads=24, num_kv_heads=24, head_dim=128,
                               intermediate_size=8192, num_layers=28, max_position_embeddings=8192)


class ToyFamily(JanusFamily):
    """Janus-Pro's architecture and loaders at other sizes, recognised by a marker in config.json."""

    name = title = "toy-janus"
    names = ("toy-janus",)
    presets = {"tiny": TOY, "toy-1b": TOY_FULL}
    published = ("toy-1b",)

    def detect(self, config_json: dict) -> bool:
        return config_json.get(MARKER) is True

    def model_info(self, checkpoint) -> ModelInfo:
        return dataclasses.replace(super().model_info(checkpoint), family=self.name)

    def write_tiny(self, out_dir, fmt="hf", seed=0, preset="tiny", max_shard_size=None) -> str:
        from janus_edge.export.tiny import write_model

        path = write_model(out_dir, self.presets[preset], fmt, seed, preset == "tiny", max_shard_size)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, MARKER: True}))
        return f"wrote a {preset} {self.title} checkpoint to {path}"


@pytest.fixture
def toy():
    family = register(ToyFamily())
    yield family
    FAMILIES.remove(family)
    for name in family.published:
        del MODELS[name]


def _cli(capsys, *args) -> str:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def test_a_registered_family_is_written_exported_compared_and_planned(toy, tmp_path, capsys):
    model, export = tmp_path / "toy", tmp_path / "toy-export"
    assert "toy-janus checkpoint" in _cli(capsys, "tiny", model, "--family", "toy-janus")
    _cli(capsys, "export", model, export, "--max-context", "1024")
    manifest = load_manifest(export)
    assert manifest.model == dataclasses.replace(TOY, vocab_size=manifest.model.vocab_size)
    assert family_named(manifest.model.family) is toy
    assert list(manifest.graphs) == ["vision_encoder", "text_embedding", "generation_embedding", "decoder",
                                     "lm_head", "generation_head", "vq_decoder"]
    table = _cli(capsys, "compare", model, export)  # every graph on ONNX Runtime against PyTorch
    passed = int(table.splitlines()[-1].split()[0])
    assert table.splitlines()[-1] == f"{passed} passed, 0 failed" and passed > len(manifest.graphs)

    # plan counts what the checkpoint holds, from the ModelInfo alone
    from janus_edge.export.checkpoint import load_checkpoint

    reference = load_checkpoint(model).model
    count = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    llm = reference.model.language_model
    assert graph_parameters(manifest.model)["decoder"] == count(llm) - count(llm.embed_tokens)
    assert graph_parameters(manifest.model)["vision_encoder"] == count(reference.model.vision_model,
                                                                        reference.model.aligner)
    text = _cli(capsys, "plan", "--model", "toy-1b", "--target", "agx-orin-64gb", "--precision", "fp16")
    h, layers, mlp = TOY_FULL.hidden_size, TOY_FULL.num_layers, TOY_FULL.intermediate_size
    decoder = layers * (4 * h * h + 3 * h * mlp + 2 * h) + h  # as many KV heads as heads
    assert f"weights decoder{'':<14}{decoder * 2 / GIB:7.2f} GiB" in text, text
    assert text.startswith("toy-1b on agx-orin-64gb")


def test_the_registry_presets_and_parameter_counts_do_not_import_torch():
    code = ("import sys\n"
            "from janus_edge.export.families import MODELS, graph_parameters\n"
            "from janus_edge.plan import make_plan\n"
            "assert all(graph_parameters(m) for m in MODELS.values())\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).parent)
