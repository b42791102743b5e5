"""goodsam: label-free panoramic semantic segmentation by distilling SAM and a teacher assistant.

Data flow (one sub-package per stage):
panorama (``panorama``) -> windows -> SAM masks (``sam``) + TA logits (``segmenters``)
-> DAR (``dar``: eq. 1-3) -> MKA (``mka``: eq. 4-9) -> trained student (``train``).
"""

__version__ = "0.1.0"
