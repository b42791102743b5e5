"""GoodSAM training: TA and student trained together on cached SAM masks (DAR + MKA losses).

* :mod:`~goodsam.train.config` — YAML setups (``nano-s0.5``, ``nano-s1.0``, ``goodsam-t|s|m``) and ``--set``;
* :mod:`~goodsam.train.data` — panoramas at a fixed ERP size, cached masks, deterministic batches;
* :mod:`~goodsam.train.augment` — yaw roll / flip of the student's input, consistent with the targets;
* :mod:`~goodsam.train.trainer` — the loop (two AdamW optimisers, AMP on CUDA, gradient clipping);
* :mod:`~goodsam.train.checkpoint` — atomic safetensors checkpoints, bit-exact resume, student export;
* :mod:`~goodsam.train.distributed` — ``torchrun`` / DistributedDataParallel;
* :mod:`~goodsam.train.monitor` — ``metrics.jsonl``, TensorBoard, ``loss_curve.png``.
"""

from goodsam.train.config import TrainConfig, available_configs, load_config
from goodsam.train.trainer import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "available_configs", "load_config", "train"]
