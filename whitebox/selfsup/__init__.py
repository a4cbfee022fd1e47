"""Self-supervised learning: DINO's self-distillation, with the parts in their own modules.

from whitebox.selfsup import DINO, DINOHead, DINOLoss
dino = DINO(backbone, DINOHead(dim, 256), DINOLoss(256), total_steps=1000)
loss, stats = dino(views, step)          # views from whitebox.data.MultiCrop
...optimizer step on dino.student_parameters()...
dino.update_teacher(step)
"""

from whitebox.selfsup.collapse import CollapseMonitor, CollapseWarning, collapse_kind, output_statistics
from whitebox.selfsup.dino import DINO, MultiCropNetwork
from whitebox.selfsup.ema import check_momentum, cosine_momentum, ema_update, make_teacher
from whitebox.selfsup.head import DINOHead, WeightNormLinear, l2_normalize
from whitebox.selfsup.loss import DINOLoss, teacher_temperature

__all__ = [
    "DINO",
    "CollapseMonitor",
    "CollapseWarning",
    "DINOHead",
    "DINOLoss",
    "MultiCropNetwork",
    "WeightNormLinear",
    "check_momentum",
    "collapse_kind",
    "cosine_momentum",
    "ema_update",
    "l2_normalize",
    "make_teacher",
    "output_statistics",
    "teacher_temperature",
]
