"""Running a launch/ command: absl's app.run, with `--help` exiting 0 (absl's help flags exit 1), unknown
`--config.` keys named before anything runs, and a failed command's error as the last line it prints.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

_HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull")
_OVERRIDE = re.compile(r"^--?(?:no)?(?P<flag>[A-Za-z_][\w-]*)\.(?P<path>[^=]+)")
_SUMMARY_CHARS = 2000  # the last line's length limit (a TensorStore error can hold a page of JSON)


class UnknownConfigKeyError(ValueError):
    """A `--config.a.b=...` override of a key the config file does not have."""


def run(main: Callable[[list[str]], int | None]) -> None:
    """`--help` / `-h` / `--helpshort` / `--helpfull` print the usage to stdout and exit 0; else app.run.

    Before the flags are parsed, every `--<config flag>.<key path>` override is checked against the config
    file (an unknown key exits 1 naming it and its section's known keys). An exception from `main` is
    printed with its traceback and then once more as the last line: `Error: <type>: <message on one line>`.
    """
    args = sys.argv[1:]
    if any(a in _HELP_FLAGS for a in args):
        app.usage(shorthelp="--helpfull" not in args, writeto_stdout=True, exitcode=0)
    try:
        check_config_overrides(sys.argv)
    except UnknownConfigKeyError as e:
        sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
        sys.exit(1)
    _drop_callbacks_of_closed_event_loops()
    app.run(_error_printed_last(main))


def check_config_overrides(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Raises UnknownConfigKeyError for an override `--<flag>.<path>` of a config-file flag whose config has
    no such key (ml_collections would fail with a bare AttributeError naming only the last part)."""
    configs: dict[str, Any] = {}
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        if not match or match["flag"] not in flag_values:
            continue
        name = match["flag"]
        if name not in configs:
            configs[name] = _load_config(name, argv, flag_values)
        if configs[name] is not None:
            _check_path(configs[name], match["path"])


def _load_config(name: str, argv: Sequence[str], flag_values: flags.FlagValues) -> Any:
    """The config file `--<name>=FILE` (or `--<name> FILE`) names, loaded without overrides; None when it is
    not given or the flag is not a config file flag (then ml_collections reports the problem)."""
    import ml_collections

    value = None
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith(f"--{name}=") or arg.startswith(f"-{name}="):
            value = arg.split("=", 1)[1]
        elif arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
    if value is None:
        return None
    try:
        config = flag_values[name].parser.parse(value)
    except Exception:  # a config file that does not load: absl's flag parsing reports it
        return None
    return config if isinstance(config, ml_collections.ConfigDict) else None


def _check_path(config: Any, path: str) -> None:
    """Walks `path` ('a.b.c', items like 'a[0]' end the check) through nested ConfigDicts."""
    import ml_collections

    holder, walked = config, []
    for part in path.split("."):
        if "[" in part or not isinstance(holder, ml_collections.ConfigDict):
            return  # an index or a non-ConfigDict value: ml_collections' own checks apply
        if part not in holder:
            key = ".".join([*walked, part])
            section = f" in {'.'.join(walked)}" if walked else ""
            raise UnknownConfigKeyError(f"unknown config key {key} (known keys{section}: {', '.join(sorted(holder))})")
        holder, walked = holder[part], [*walked, part]


def _error_printed_last(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
    """`main` (its return value is the exit status, as in absl), printing an exception's traceback and then
    the exception on one line, and exiting 1."""

    def wrapped(argv: list[str]) -> int | None:
        try:
            return main(argv)
        except app.UsageError:
            raise  # absl prints the usage
        except Exception as e:
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.write(f"Error: {one_line(e)}\n")
            sys.stderr.flush()
            sys.exit(1)

    return wrapped


def one_line(error: BaseException) -> str:
    """`<type>: <message>` with the message's whitespace collapsed, at most `_SUMMARY_CHARS` characters."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 3] + "..."


def _drop_callbacks_of_closed_event_loops() -> None:
    """Drops the 'RuntimeError: Event loop is closed' reports of TensorStore callbacks, passing on every
    other unraisable exception.

    orbax runs a restore's reads on an event loop that it closes as soon as one read fails; the reads still
    in flight then finish on TensorStore's threads, whose callbacks (`loop.call_soon_threadsafe`) can no
    longer reach the closed loop. Python prints each as an unraisable exception, dozens of tracebacks after
    the real error (which the failed restore raises). They carry nothing: the restore has already failed.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


def _is_closed_loop_callback(unraisable: Any) -> bool:
    error = unraisable.exc_value
    if not isinstance(error, RuntimeError) or str(error) != "Event loop is closed":
        return False
    return any(frame.name == "call_soon_threadsafe" for frame in traceback.extract_tb(unraisable.exc_traceback))
