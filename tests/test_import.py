"""`import musicgen_jax` must not import torch or transformers (they are test/convert extras only)."""

import subprocess
import sys


def test_import_does_not_pull_torch_or_transformers():
    code = (
        "import sys, musicgen_jax\n"
        "from musicgen_jax import MusicgenMelodyForConditionalGeneration\n"
        "import musicgen_jax.decoder, musicgen_jax.config, musicgen_jax.conditioning\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing musicgen_jax imported: {out.stdout.strip()}"


def _imports_of(path, package: str, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
    return found


def test_no_import_circles_and_models_never_import_the_trainer():
    """Dependencies point down (see README, Architecture): no module reaches back up, even lazily."""
    import os

    import musicgen_jax

    folder = os.path.dirname(musicgen_jax.__file__)
    modules = {name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name != "__init__.py"}
    graph = {m: _imports_of(os.path.join(folder, f"{m}.py"), "musicgen_jax", modules) - {m} for m in modules}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph[start])

    circles = sorted(m for m in modules if reaches(m, m))
    assert not circles, f"modules on an import circle: {circles}"
    below_training = {"config", "t5", "decoder", "encodec", "chroma", "conditioning", "core", "loss", "sampling"}
    below_training |= {"generation", "modeling", "parameters", "checkpoint"}
    for name in sorted(below_training & modules):
        assert not reaches(name, "training") and not reaches(name, "finetune"), f"{name} imports the trainer"
