"""What several commands share: option help texts and the progress bar of a batch."""

from __future__ import annotations

from collections.abc import Callable

SCALE_HELP = ("Model input scale: each image/window is resized by it before the model, logits resized back; "
              "'auto' = the model's training pixel density / the panorama's (width = 360°). Default: the "
              "scale a trained student was trained at (its student.scale), else 1.")

STRICT_HELP = "Stop at the first image that fails (default: do all others, then list the failed ones)."


def progress_bar(label: str) -> Callable[[int, int, str], None]:
    """A ``(done, total, name)`` callback drawing a tqdm bar (hidden when not on a terminal)."""
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="img", disable=None, leave=False)

    def update(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.set_postfix_str(name, refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update
