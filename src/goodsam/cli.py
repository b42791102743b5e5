"""The ``goodsam`` command line. Each sub-command lives in ``goodsam.commands.<name>``."""

from __future__ import annotations

import importlib
import sys

import typer

from goodsam.errors import BatchError, GoodSAMError

app = typer.Typer(
    name="goodsam",
    help="Label-free panoramic semantic segmentation: distil SAM and a teacher assistant into a student.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules in data-flow order; each defines ``register(app)``.
COMMAND_MODULES = ("weights", "demo", "masks", "train", "predict", "eval", "export", "data")


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        qualified = f"goodsam.commands.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:  # a command still being built is simply absent
            if exc.name == qualified:
                continue
            raise
        module.register(app)


_register_commands()


def batch_error_text(exc: BatchError) -> str:
    """One line for one failed input; else one line per failed input and a last line that counts them."""
    others = exc.total - len(exc.failures)
    done = f" ({others} other input(s) were done)" if others else ""
    if len(exc.failures) == 1:
        return f"goodsam: error: {exc.failures[0][1]}{done}"
    lines = [f"goodsam: failed: {reason}" for _, reason in exc.failures]
    lines.append(f"goodsam: error: {len(exc.failures)} of {exc.total} inputs failed (listed above){done}; "
                 "--strict stops at the first")
    return "\n".join(lines)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; a batch command whose inputs
    partly failed lists each failed input on its own line, then exits 2."""
    try:
        app()
    except BatchError as exc:
        print(batch_error_text(exc), file=sys.stderr)
        sys.exit(2)
    except GoodSAMError as exc:
        print(f"goodsam: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("goodsam: interrupted (finished work is kept; rerun to resume)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
