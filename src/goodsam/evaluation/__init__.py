"""Evaluation: confusion-matrix metrics, labelled-set layouts, class maps, reports."""

from goodsam.evaluation.class_maps import ClassMap, LabelError, get_class_map
from goodsam.evaluation.datasets import LabelledSample, LabelledSet, open_labelled_set
from goodsam.evaluation.evaluate import EvalResult, evaluate
from goodsam.evaluation.metrics import ConfusionMatrix, Scores
from goodsam.evaluation.report import markdown_table, plot_confusion, write_report

__all__ = [
    "ClassMap", "ConfusionMatrix", "EvalResult", "LabelError", "LabelledSet", "LabelledSample", "Scores",
    "evaluate", "get_class_map", "markdown_table", "open_labelled_set", "plot_confusion", "write_report",
]
