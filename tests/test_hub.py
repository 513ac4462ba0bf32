"""hubconf.py from a bare clone: stcsnn not installed, and no package but torch importable."""

import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# Runs with -S (no site-packages, so no installed or editable stcsnn) plus torch's own folder on sys.path, and with
# the other core dependencies made unimportable: what a clone on a machine holding only torch sees.
_CHILD = """
import sys
sys.path.append(sys.argv[2])
for name in ("numpy", "yaml", "tqdm", "safetensors"):
    sys.modules[name] = None  # `import numpy` now raises ImportError
import importlib.util
assert importlib.util.find_spec("stcsnn") is None, "stcsnn is importable: not a bare clone"
import torch
model = torch.hub.load(sys.argv[1], "stc_lif", source="local", hidden_channels=[16], frame_shape=[1, 16, 16])
out = model(torch.rand(2, 3, 1, 16, 16), n_future=2)
print(type(model).__name__, tuple(out.shape))
"""


def test_hubconf_builds_a_model_from_a_bare_clone_with_only_torch(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(ROOT / "hubconf.py", clone / "hubconf.py")
    shutil.copytree(ROOT / "src", clone / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    site = str(Path(torch.__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-S", "-c", _CHILD, str(clone), site], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "SpikingPredictor (2, 2, 1, 16, 16)"
