"""One module per stage; each follows the contract in `pipeline/stage.py` (NAME, VERSION,
Params, Inputs, OUTPUTS, run). No stage module imports another: what two stages share lives
in a named module (pipeline/generation.py, pipeline/training.py, pipeline/data/...).

`STAGES` is every module of this package, by its `NAME`: a new stage is a new file here."""
import importlib
import pkgutil

STAGES = {}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    STAGES[_module.NAME] = _module
